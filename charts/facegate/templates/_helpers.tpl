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

{{/*
facegate.podSecurityContext: every pod runs as UID/GID 65532. fsGroup makes
volumes writable; OnRootMismatch keeps the kubelet from re-chmodding a
volume's existing files on every mount (the photo store and the key copies
must stay 0600/0700: pkg/photostore and pkg/sealed refuse anything looser).
*/}}
{{- define "facegate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
fsGroupChangePolicy: OnRootMismatch
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
{{- with .Values.image.pullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* facegate.natsCredsMount/Volume/Env: the operator's "nats.creds" Secret ("" = none). */}}
{{- define "facegate.natsCredsMount" -}}
{{- if . -}}
- name: nats-creds
  mountPath: /etc/facegate/nats
  readOnly: true
{{- end }}
{{- end -}}

{{- define "facegate.natsCredsVolume" -}}
{{- if . -}}
- name: nats-creds
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - key: nats.creds
        path: nats.creds
{{- end }}
{{- end -}}

{{/*
facegate.nkeyVolume / nkeyMount: a service's NKEY seed (pkg/natsauth writes
<user>.nk per user). Argument: the service's nats values {existingSecret, user}.
nats.NkeyOptionFromSeed does not check the file mode, so the Secret is
mounted as it is (group-readable through fsGroup).
*/}}
{{- define "facegate.nkeyVolume" -}}
{{- if .existingSecret -}}
- name: nats-seed
  secret:
    secretName: {{ .existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ printf "%s.nk" (required "nats.user is required with nats.existingSecret" .user) }}
        path: {{ printf "%s.nk" .user }}
{{- end }}
{{- end -}}

{{- define "facegate.nkeyMount" -}}
{{- if .existingSecret -}}
- {name: nats-seed, mountPath: /etc/facegate/nats, readOnly: true}
{{- end }}
{{- end -}}

{{/* facegate.nkeyPath: where a service's seed is mounted ("" without a Secret). */}}
{{- define "facegate.nkeyPath" -}}
{{- if .existingSecret -}}
{{- printf "/etc/facegate/nats/%s.nk" .user -}}
{{- end -}}
{{- end -}}

{{/*
facegate.serviceNatsEnv: the NATS settings of the services using pkg/svcflag
with --nats-creds/--nats-inbox-prefix (matcher, api). Arguments: root, nats.
*/}}
{{- define "facegate.serviceNatsEnv" -}}
- name: FACEGATE_NATS_URL
  value: {{ required "nats.url is required (an existing NATS JetStream cluster)" .root.Values.nats.url | quote }}
- name: FACEGATE_ENSURE_STREAMS
  value: {{ .root.Values.nats.ensureStreams | toString | quote }}
{{- if .nats.existingSecret }}
- name: FACEGATE_NATS_CREDS
  value: {{ include "facegate.nkeyPath" .nats | quote }}
- name: FACEGATE_NATS_INBOX_PREFIX
  value: {{ printf "_INBOX.%s" .nats.user | quote }}
{{- end }}
{{- end -}}

{{/* facegate.commonEnv: log level and the telemetry address. Arguments: root, level. */}}
{{- define "facegate.commonEnv" -}}
- name: FACEGATE_LOG_LEVEL
  value: {{ default "info" .level | quote }}
- name: FACEGATE_METRICS_ADDR
  value: {{ printf ":%d" (int .root.Values.metricsPort) | quote }}
{{- end -}}

{{/* facegate.optEnv: FACEGATE_<name> only when the value is set. Arguments: name, value. */}}
{{- define "facegate.optEnv" -}}
{{- if and (ne (toString .value) "") (ne (toString .value) "0") -}}
- name: {{ printf "FACEGATE_%s" .name }}
  value: {{ toString .value | quote }}
{{- end }}
{{- end -}}

{{/* facegate.metricsPort: the container port every service serves telemetry on. */}}
{{- define "facegate.metricsPort" -}}
- {name: metrics, containerPort: {{ .Values.metricsPort }}, protocol: TCP}
{{- end -}}

{{/*
facegate.probes: liveness on /healthz and readiness on /readyz of the
metrics port (pkg/telemetry). /readyz turns ready once the service has
caught up (the matcher and the API after replaying ENROLMENTS), so the
startup probe gives replay up to 10 minutes before liveness applies.
*/}}
{{- define "facegate.probes" -}}
{{- $port := default "metrics" .port -}}
startupProbe:
  httpGet: {path: /healthz, port: {{ $port }}}
  periodSeconds: 5
  failureThreshold: 120
livenessProbe:
  httpGet: {path: /healthz, port: {{ $port }}}
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: {{ $port }}}
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
{{- end -}}

{{/*
facegate.installSecrets: an init container copying Secret files into a
memory volume with the modes the services demand (pkg/sealed: key files
0400/0600 in a folder others cannot write; pkg/audit: signing keys 0600).
A Secret volume cannot give them: its files are root's or fsGroup-readable
and its folder is world-writable. It runs the service's own image (Debian
slim: sh and coreutils' install) with the same restrictions. Arguments:
root, image (an image.repositories key), copies (list of "from=to" folder
pairs; every regular file of "from" lands in "to" with mode 0400, "to" is
created with mode 0700), resources.
*/}}
{{- define "facegate.installSecrets" -}}
- name: install-secrets
  image: {{ include "facegate.image" (dict "root" .root "component" .image) | quote }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  command:
    - /bin/sh
    - -ec
    - |
      umask 077
      for pair in "$@"; do
        from=${pair%%=*}
        to=${pair#*=}
        install -d -m 0700 "$to"
        n=0
        for f in "$from"/*; do
          [ -f "$f" ] || continue
          install -m 0400 "$f" "$to/"
          n=$((n+1))
        done
        [ "$n" -gt 0 ] || { echo "install-secrets: no files in $from" >&2; exit 1; }
      done
    - install-secrets
    {{- range .copies }}
    - {{ . | quote }}
    {{- end }}
  resources:
    requests: {cpu: 10m, memory: 16Mi}
    limits: {memory: 32Mi}
  securityContext:
    {{- include "facegate.containerSecurityContext" .root | nindent 4 }}
{{- end -}}

{{/* facegate.privateVolume: the memory volume the key copies live in. */}}
{{- define "facegate.privateVolume" -}}
- name: private
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
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

{{/* facegate.baseEgress: DNS and NATS, what every facegate pod needs. */}}
{{- define "facegate.baseEgress" -}}
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
  {{- with .Values.networkPolicy.dns.peers }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
- ports:
    - {port: {{ .Values.networkPolicy.nats.port }}, protocol: TCP}
  {{- with .Values.networkPolicy.nats.peers }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/*
facegate.networkPolicy: the allow-list of one component. Arguments: ctx
(root, component), ingress (extra ingress rules, YAML), egress (extra egress
rules, YAML), selector (pod labels; default the component's selector).
*/}}
{{- define "facegate.networkPolicy" -}}
{{- $root := .ctx.root -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ default (include "facegate.componentName" .ctx) .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "facegate.labels" .ctx | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- if .selector }}
      {{- toYaml .selector | nindent 6 }}
      {{- else }}
      {{- include "facegate.selectorLabels" .ctx | nindent 6 }}
      {{- end }}
  policyTypes: [Ingress, Egress]
  ingress:
    {{- with .ingress }}
    {{- . | nindent 4 }}
    {{- end }}
    {{- include "facegate.metricsIngress" $root | nindent 4 }}
  egress:
    {{- include "facegate.baseEgress" $root | nindent 4 }}
    {{- with .egress }}
    {{- . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/*
facegate.service: a Service with the metrics port and optional extra ports.
Arguments: ctx, type, ports (YAML list), headless.
*/}}
{{- define "facegate.service" -}}
{{- $root := .ctx.root -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ default (include "facegate.componentName" .ctx) .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "facegate.labels" .ctx | nindent 4 }}
    {{- with .labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- if .headless }}
  clusterIP: None
  {{- else }}
  type: {{ default "ClusterIP" .type }}
  {{- end }}
  selector:
    {{- include "facegate.selectorLabels" .ctx | nindent 4 }}
  ports:
    {{- with .ports }}
    {{- . | nindent 4 }}
    {{- end }}
    - {name: metrics, port: {{ $root.Values.metricsPort }}, targetPort: metrics, protocol: TCP}
{{- end -}}

{{/*
facegate.serviceMonitor: scrape a component's Service on "metrics", when
enabled and the cluster has the Prometheus operator's API. Argument: ctx.
*/}}
{{- define "facegate.serviceMonitor" -}}
{{- $root := .root -}}
{{- if and $root.Values.serviceMonitor.enabled ($root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") }}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "facegate.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "facegate.labels" . | nindent 4 }}
    {{- with $root.Values.serviceMonitor.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "facegate.selectorLabels" . | nindent 6 }}
  namespaceSelector:
    matchNames: [{{ $root.Release.Namespace | quote }}]
  endpoints:
    - port: metrics
      path: /metrics
      interval: {{ $root.Values.serviceMonitor.interval }}
{{- end }}
{{- end -}}

{{/* facegate.photoClaim: the API's photo store claim. */}}
{{- define "facegate.photoClaim" -}}
{{- $store := .Values.api.photoStore -}}
{{- if $store.existingClaim -}}
{{- $store.existingClaim -}}
{{- else -}}
{{- include "facegate.componentName" (dict "root" . "component" "photos") -}}
{{- end -}}
{{- end -}}

{{/* facegate.scheduling: nodeSelector and tolerations of a component's values. */}}
{{- define "facegate.scheduling" -}}
{{- with .nodeSelector -}}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
facegate.cidrRule: one NetworkPolicy rule for a list of CIDRs; without
CIDRs the rule names no peer (any address). Arguments: dir ("from" or
"to"), cidrs, port (optional).
*/}}
{{- define "facegate.cidrRule" -}}
{{- $rule := dict -}}
{{- if .port -}}
{{- $_ := set $rule "ports" (list (dict "port" .port "protocol" "TCP")) -}}
{{- end -}}
{{- if .cidrs -}}
{{- $peers := list -}}
{{- range .cidrs -}}
{{- $peers = append $peers (dict "ipBlock" (dict "cidr" .)) -}}
{{- end -}}
{{- $_ := set $rule .dir $peers -}}
{{- end -}}
{{- toYaml (list $rule) -}}
{{- end -}}
