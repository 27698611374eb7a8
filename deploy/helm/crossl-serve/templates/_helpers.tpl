{{- define "crossl-serve.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "crossl-serve.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "crossl-serve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "crossl-serve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "crossl-serve.labels" -}}
{{ include "crossl-serve.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "crossl-serve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "crossl-serve.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "crossl-serve.image" -}}
{{- $tag := .Values.image.tag | default (ternary (printf "%s-cuda" .Chart.AppVersion) .Chart.AppVersion (eq .Values.image.variant "cuda")) -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{/* Secret holding CROSSL_API_KEYS: the user's, or the chart's when auth.apiKeys is set. */}}
{{- define "crossl-serve.apiKeysSecret" -}}
{{- if .Values.auth.existingSecret -}}
{{- .Values.auth.existingSecret -}}
{{- else if .Values.auth.apiKeys -}}
{{- printf "%s-api-keys" (include "crossl-serve.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "crossl-serve.tlsSecret" -}}
{{- if .Values.tls.existingSecret -}}
{{- .Values.tls.existingSecret -}}
{{- else if .Values.tls.cert -}}
{{- printf "%s-tls" (include "crossl-serve.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "crossl-serve.scheme" -}}
{{- if include "crossl-serve.tlsSecret" . -}}HTTPS{{- else -}}HTTP{{- end -}}
{{- end -}}

{{- define "crossl-serve.redisName" -}}
{{- printf "%s-redis" (include "crossl-serve.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "crossl-serve.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "crossl-serve.name" . }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "crossl-serve.redisLabels" -}}
{{ include "crossl-serve.redisSelectorLabels" . }}
app.kubernetes.io/component: store
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Seconds Kubernetes waits after starting the preStop hook: the sleep, the server's whole drain and a margin. */}}
{{- define "crossl-serve.terminationGracePeriodSeconds" -}}
{{- $s := .Values.shutdown -}}
{{- add (int $s.preStopSleepSeconds) (div (add (int $s.drainTimeoutMs) 999) 1000) (int $s.shutdownMarginSeconds) -}}
{{- end -}}

{{/* The pod gets `accelerator: nvidia-gpu` when it asks for a GPU; the ServiceMonitor copies it onto every
series so the CPU-fallback alert can tell a GPU deployment from a CPU one. */}}
{{- define "crossl-serve.wantsGpu" -}}
{{- if hasKey (.Values.resources.limits | default dict) "nvidia.com/gpu" -}}true{{- end -}}
{{- end -}}
