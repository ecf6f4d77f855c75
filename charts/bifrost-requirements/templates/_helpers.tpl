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
A Kubernetes quantity as a number (a float, as text): `64Mi` → 67108864, `50m` → 0.05. The schema
already checked the grammar (the binary's, see src/spec.rs parse_quantity); this scales it so the
limits the binary and the API server enforce can be checked at install time.
*/}}
{{- define "bifrost-requirements.quantity" -}}
{{- $q := toString . -}}
{{- $num := regexFind "^[+]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)" $q -}}
{{- $suffix := trimPrefix $num $q -}}
{{- $num = trimPrefix "+" $num -}}
{{- if hasPrefix "." $num }}{{ $num = printf "0%s" $num }}{{ end -}}
{{- $scale := 1.0 -}}
{{- if regexMatch "^[eE][+-]?[0-9]+$" $suffix -}}
{{- $exp := int (trimPrefix "+" (substr 1 (len $suffix) $suffix)) -}}
{{- range until (int (max $exp (sub 0 $exp))) -}}
{{- $scale = ternary (mulf $scale 10.0) (divf $scale 10.0) (ge $exp 0) -}}
{{- end -}}
{{- else if $suffix -}}
{{- $scale = get (dict "n" 0.000000001 "u" 0.000001 "m" 0.001 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 "P" 1000000000000000.0 "E" 1000000000000000000.0 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0) $suffix -}}
{{- end -}}
{{- mulf (float64 $num) $scale -}}
{{- end -}}

{{/*
Refuse, with the value's path, what the operator would refuse at start (it would crash-loop) or
the API server would refuse in the pod template (a limit below its request): durations out of
the binary's range, the resolver's memory limit, the two ports, and an example resource where
the webhook never injects.
*/}}
{{- define "bifrost-requirements.validate" -}}
{{- $durations := list
  (list "webhook.tls.checkInterval" .Values.webhook.tls.checkInterval 0.1 "100ms")
  (list "webhook.tls.selfManaged.certValidity" .Values.webhook.tls.selfManaged.certValidity 10.0 "10s")
  (list "resolver.timeout" .Values.resolver.timeout 0.0 "0s") -}}
{{- range $durations -}}
{{- $secs := float64 (include "bifrost-requirements.durationSeconds" (index . 1)) -}}
{{- if lt $secs (index . 2) -}}
{{- fail (printf "%s: %q is too short (at least %s)" (index . 0) (index . 1) (index . 3)) -}}
{{- end -}}
{{- if gt $secs 31536000.0 -}}
{{- fail (printf "%s: %q is out of range (at most 8760h)" (index . 0) (index . 1)) -}}
{{- end -}}
{{- end -}}
{{- include "bifrost-requirements.validateResources" . -}}
{{- if and .Values.webhook.enabled (eq (int .Values.webhook.port) (int .Values.metrics.port)) -}}
{{- fail (printf "webhook.port: %v is metrics.port too; the operator cannot serve both on one port" .Values.webhook.port) -}}
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

{{/*
The operator's resources and the resolver's memory limit: every limit at least its request (the
API server refuses the pods otherwise, and the Deployment never gets one), the resolver's limit
at least 64Mi (uv holds 25 to 40 MiB resolving a single wheel; the binary refuses less) and at
most the container's memory limit minus 64Mi for the operator itself (above, the kernel kills
the pod instead of the guard stopping uv).
*/}}
{{- define "bifrost-requirements.validateResources" -}}
{{- $requests := .Values.resources.requests | default dict -}}
{{- $limits := .Values.resources.limits | default dict -}}
{{- range $name := list "cpu" "memory" "ephemeral-storage" -}}
{{- if and (hasKey $requests $name) (hasKey $limits $name) -}}
{{- $request := float64 (include "bifrost-requirements.quantity" (get $requests $name)) -}}
{{- $limit := float64 (include "bifrost-requirements.quantity" (get $limits $name)) -}}
{{- if lt $limit $request -}}
{{- fail (printf "resources.limits.%s: %v is below resources.requests.%s (%v)" $name (get $limits $name) $name (get $requests $name)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if .Values.resolver.enabled -}}
{{- $bytes := float64 (include "bifrost-requirements.quantity" .Values.resolver.memoryLimit) -}}
{{- if lt $bytes 67108864.0 -}}
{{- fail (printf "resolver.memoryLimit: %q is less than 64Mi, too little for uv to start" .Values.resolver.memoryLimit) -}}
{{- end -}}
{{- if ge $bytes 9223372036854775807.0 -}}
{{- fail (printf "resolver.memoryLimit: %q is out of range" .Values.resolver.memoryLimit) -}}
{{- end -}}
{{- if hasKey $limits "memory" -}}
{{- $limit := float64 (include "bifrost-requirements.quantity" (get $limits "memory")) -}}
{{- if gt (addf $bytes 67108864.0) $limit -}}
{{- fail (printf "resolver.memoryLimit: %q leaves less than 64Mi of resources.limits.memory (%v) for the operator; lower it or raise the limit" .Values.resolver.memoryLimit (get $limits "memory")) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
