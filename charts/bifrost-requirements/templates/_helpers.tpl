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

{{/*
A duration in seconds (a float, as text). The schema already checked the grammar (Go's, or a
bare number of seconds: the binary's, see src/duration.rs); this only adds the parts up, so the
minimums the binary enforces can be checked at install time instead of in a crash loop.
*/}}
{{- define "bifrost-requirements.durationSeconds" -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h)?" . -1 -}}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" . -}}
{{- $unit := trimPrefix $num . -}}
{{- $scale := get (dict "ns" 0.000000001 "us" 0.000001 "µs" 0.000001 "ms" 0.001 "s" 1.0 "" 1.0 "m" 60.0 "h" 3600.0) $unit -}}
{{- $total = addf $total (mulf (float64 $num) $scale) -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/*
Refuse, with the value's path, what the operator would refuse at start (it would crash-loop):
durations out of the binary's range, and an example resource where the webhook never injects.
*/}}
{{- define "bifrost-requirements.validate" -}}
{{- $durations := list
  (list "webhook.tls.checkInterval" .Values.webhook.tls.checkInterval 0.1 "100ms")
  (list "webhook.tls.selfManaged.certValidity" .Values.webhook.tls.selfManaged.certValidity 10.0 "10s") -}}
{{- range $durations -}}
{{- $secs := float64 (include "bifrost-requirements.durationSeconds" (index . 1)) -}}
{{- if lt $secs (index . 2) -}}
{{- fail (printf "%s: %q is too short (at least %s)" (index . 0) (index . 1) (index . 3)) -}}
{{- end -}}
{{- if gt $secs 31536000.0 -}}
{{- fail (printf "%s: %q is out of range (at most 8760h)" (index . 0) (index . 1)) -}}
{{- end -}}
{{- end -}}
{{- if .Values.example.enabled -}}
{{- $ns := include "bifrost-requirements.exampleNamespace" . -}}
{{- if has $ns (concat (list "kube-system" .Release.Namespace) .Values.webhook.excludeNamespaces) -}}
{{- fail (printf "example.namespace: %q is never injected (kube-system, the release namespace and webhook.excludeNamespaces are excluded); set it to the namespace where your worker pods run" $ns) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The example resource's namespace: example.namespace, else watchNamespace, else the release's. */}}
{{- define "bifrost-requirements.exampleNamespace" -}}
{{- .Values.example.namespace | default .Values.watchNamespace | default .Release.Namespace -}}
{{- end -}}
