{{/*
Name of every object: the release name, plus the chart name unless it already contains it.
Truncated so that the longest derived name (`<fullname>-webhook-tls`) stays a valid label.
*/}}
{{- define "bifrost-requirements.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 48 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
Selector labels. `app.kubernetes.io/name: bifrost-requirements` is a contract: the webhook never
mutates pods carrying it (the operator's own), so it does not follow any name override.
*/}}
{{- define "bifrost-requirements.selectorLabels" -}}
app.kubernetes.io/name: bifrost-requirements
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bifrost-requirements.labels" -}}
{{ include "bifrost-requirements.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "bifrost-requirements.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bifrost-requirements.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "bifrost-requirements.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "bifrost-requirements.leaseName" -}}
{{- default (printf "%s-operator" (include "bifrost-requirements.fullname" .)) .Values.leaderElection.leaseName -}}
{{- end -}}

{{- define "bifrost-requirements.webhookServiceName" -}}
{{- printf "%s-webhook" (include "bifrost-requirements.fullname" .) -}}
{{- end -}}

{{/* The Secret holding the serving certificate (written by the operator or by cert-manager). */}}
{{- define "bifrost-requirements.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "bifrost-requirements.fullname" .) -}}
{{- end -}}

{{/* The MutatingWebhookConfiguration (cluster-scoped). */}}
{{- define "bifrost-requirements.webhookConfigName" -}}
{{- include "bifrost-requirements.fullname" . -}}
{{- end -}}

{{- define "bifrost-requirements.certificateName" -}}
{{- printf "%s-webhook" (include "bifrost-requirements.fullname" .) -}}
{{- end -}}

{{- define "bifrost-requirements.selfManagedTls" -}}
{{- if and .Values.webhook.enabled (eq .Values.webhook.tls.mode "selfManaged") -}}true{{- end -}}
{{- end -}}

{{- define "bifrost-requirements.certManagerTls" -}}
{{- if and .Values.webhook.enabled (eq .Values.webhook.tls.mode "certManager") -}}true{{- end -}}
{{- end -}}
