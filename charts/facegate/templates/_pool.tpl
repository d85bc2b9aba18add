{{/*
facegate.poolTemplate renders the consumer and embedder settings shared by
gallery pools and standalone EmbedderPools. The embedder image defaults to
the chart's; NATS URL and credentials default to the chart's nats values.
*/}}
{{- define "facegate.poolTemplate" -}}
{{- $root := .root -}}
{{- $p := .pool -}}
consumer:
  stream: {{ default "FRAMES" $p.consumer.stream | quote }}
  {{- with $p.consumer.filterSubject }}
  filterSubject: {{ . | quote }}
  {{- end }}
  {{- with (default $root.Values.nats.url $p.consumer.url) }}
  url: {{ . | quote }}
  {{- end }}
  {{- with (default $root.Values.nats.credentialsSecret $p.consumer.credentialsSecret) }}
  credentialsSecret: {{ . | quote }}
  {{- end }}
  {{- with .durable }}
  durable: {{ . | quote }}
  {{- end }}
image: {{ default (include "facegate.image" (dict "root" $root "component" "embedder")) $p.image | quote }}
{{- with $p.batchSize }}
batchSize: {{ int . }}
{{- end }}
scaling:
  {{- toYaml (required "pools need scaling settings" $p.scaling) | nindent 2 }}
{{- with $p.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $p.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $p.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $p.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $p.runtimeClassName }}
runtimeClassName: {{ . | quote }}
{{- end }}
{{- with $p.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- /*
The operator's pod template sets FACEGATE_CACHE to an empty volume and
probes the "health" port without setting the embedder's --metrics-addr;
these entries come after the operator's (the pool's env is appended, the
last duplicate wins) so that the embedder finds the cache baked into its
image and serves /healthz and /readyz where the probes look.
*/}}
env:
  - {name: FACEGATE_CACHE, value: /opt/facegate/cache}
  - {name: FACEGATE_METRICS_ADDR, value: ":8080"}
  {{- with $p.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}
