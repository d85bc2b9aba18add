{{/*
Names, labels and shared pod settings. Every component gets the standard
app.kubernetes.io labels; selectors use name, instance and component only,
so that they stay stable across upgrades.
*/}}

{{- define "facegate.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "facegate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* facegate.componentName: <fullname>-<component>, 63 characters at most. */}}
{{- define "facegate.componentName" -}}
{{- printf "%s-%s" (include "facegate.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "facegate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "facegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "facegate.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "facegate.labels" -}}
{{ include "facegate.selectorLabels" . }}
helm.sh/chart: {{ include "facegate.chart" .root }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: facegate
{{- end -}}

{{/* facegate.image: registry/repository:tag for a component key of image.repositories. */}}
{{- define "facegate.image" -}}
{{- $img := .root.Values.image -}}
{{- $repo := required (printf "image.repositories.%s is required" .component) (index $img.repositories .component) -}}
{{- $tag := default .root.Chart.AppVersion $img.tag -}}
{{- if $img.registry -}}
{{- printf "%s/%s:%s" $img.registry $repo $tag -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{- define "facegate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "facegate.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "facegate.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* facegate.natsEnv: the NATS connection every service reads. */}}
{{- define "facegate.natsEnv" -}}
- name: FACEGATE_NATS_URL
  value: {{ required "nats.url is required (an existing NATS JetStream cluster)" .Values.nats.url | quote }}
{{- end -}}

{{/* facegate.natsCredsVolume: volume + mount pair for a creds Secret ("" = none). */}}
{{- define "facegate.natsCredsMount" -}}
{{- if . }}
- name: nats-creds
  mountPath: /etc/facegate/nats
  readOnly: true
{{- end }}
{{- end -}}

{{- define "facegate.natsCredsVolume" -}}
{{- if . }}
- name: nats-creds
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - key: nats.creds
        path: nats.creds
{{- end }}
{{- end -}}

{{- define "facegate.natsCredsEnv" -}}
{{- if . }}
- name: FACEGATE_NATS_CREDS
  value: /etc/facegate/nats/nats.creds
{{- end }}
{{- end -}}

{{/* facegate.probes: liveness/readiness on the "health" port. */}}
{{- define "facegate.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: health}
  initialDelaySeconds: 10
  periodSeconds: 10
readinessProbe:
  httpGet: {path: /readyz, port: health}
  initialDelaySeconds: 5
  periodSeconds: 5
{{- end -}}

{{/* facegate.dns1123: lower-case a name into a DNS label. */}}
{{- define "facegate.dns1123" -}}
{{- . | lower | replace "_" "-" | replace "." "-" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* facegate.metricsIngress: an ingress rule letting monitoring scrape "metrics". */}}
{{- define "facegate.metricsIngress" -}}
- ports:
    - {port: metrics, protocol: TCP}
  from:
    - podSelector: {}
    {{- range .Values.networkPolicy.metricsNamespaces }}
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ . | quote }}
    {{- end }}
{{- end -}}

{{/* facegate.photoClaim: the enrolment photo claim name, "" when photos live in an object store. */}}
{{- define "facegate.photoClaim" -}}
{{- $store := .Values.enrolment.photoStore -}}
{{- if $store.existingClaim -}}
{{- $store.existingClaim -}}
{{- else if not $store.s3Secret -}}
{{- include "facegate.componentName" (dict "root" . "component" "photos") -}}
{{- end -}}
{{- end -}}
