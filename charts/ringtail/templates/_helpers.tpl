{{/* Names and labels. */}}
{{- define "ringtail.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release-wide name prefix, at most 48 characters so that "-distributor" fits in 63. */}}
{{- define "ringtail.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ringtail.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ringtail.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ringtail.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ringtail.labels" -}}
helm.sh/chart: {{ include "ringtail.chart" . }}
{{ include "ringtail.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one workload: (dict "root" $ "component" "ingester"). */}}
{{- define "ringtail.componentSelectorLabels" -}}
{{ include "ringtail.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ringtail.componentLabels" -}}
{{ include "ringtail.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The ingester StatefulSet's (and PDB's) name: -ingester, or -ingester-<zone>. */}}
{{- define "ringtail.ingesterName" -}}
{{- $zone := dig "zone" "name" "" . }}
{{- if $zone }}
{{- printf "%s-ingester-%s" (include "ringtail.fullname" .root) $zone }}
{{- else }}
{{- printf "%s-ingester" (include "ringtail.fullname" .root) }}
{{- end }}
{{- end }}

{{/* The zone label of a per-zone ingester StatefulSet's pods (nothing without zones). */}}
{{- define "ringtail.zoneLabel" -}}
{{- with dig "zone" "name" "" . }}
ringtail.io/zone: {{ . | quote }}
{{- end }}
{{- end }}

{{- define "ringtail.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ringtail.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ringtail.gossipService" -}}
{{- printf "%s-gossip" (include "ringtail.fullname" .) }}
{{- end }}

{{- define "ringtail.s3SecretName" -}}
{{- if .Values.storage.s3.existingSecret }}
{{- .Values.storage.s3.existingSecret }}
{{- else if and .Values.storage.s3.accessKeyId .Values.storage.s3.secretAccessKey }}
{{- printf "%s-s3" (include "ringtail.fullname" .) }}
{{- end }}
{{- end }}

{{/* The Secret holding the cluster secret: the user's, or the one the chart creates. */}}
{{- define "ringtail.clusterSecretName" -}}
{{- .Values.clusterSecret.existingSecret | default (printf "%s-cluster" (include "ringtail.fullname" .)) }}
{{- end }}

{{/* data_dir: the WAL and local blocks (the ingesters' volume is mounted here). */}}
{{/* The scheme of every pod's HTTP API (3200): https with httpTls.secretName. */}}
{{- define "ringtail.httpScheme" -}}
{{- if .Values.httpTls.secretName }}https{{ else }}http{{ end }}
{{- end }}

{{/* The name callers check in the HTTP certificate: httpTls.serverName, else the querier
Service's in-cluster name (what Grafana calls). */}}
{{- define "ringtail.httpTlsServerName" -}}
{{- .Values.httpTls.serverName | default (printf "%s-querier.%s.svc" (include "ringtail.fullname" .) .Release.Namespace) }}
{{- end }}

{{- define "ringtail.dataDir" -}}
/var/lib/ringtail/data
{{- end }}

{{- define "ringtail.blocksClaimName" -}}
{{- default (printf "%s-blocks" (include "ringtail.fullname" .)) .Values.storage.filesystem.existingClaim }}
{{- end }}

{{/*
Drain bound in whole seconds: ceil(config.shutdown_timeout_ms / 1000). The node's
shutdown sequence (LEAVING, drain, flush, leave) ends within shutdown_timeout_ms, plus
at most 1 s for the last gossip packets.
*/}}
{{- define "ringtail.shutdownTimeoutSeconds" -}}
{{- $ms := int64 (default 60000 .Values.config.shutdown_timeout_ms) }}
{{- if lt $ms 5000 }}
{{- fail (printf "config.shutdown_timeout_ms must be at least 5000 (ringtail refuses less), got %d" $ms) }}
{{- end }}
{{- div (add $ms 999) 1000 }}
{{- end }}

{{/*
terminationGracePeriodSeconds of one workload: (dict "root" $ "component" "ingester").
Derived from config.shutdown_timeout_ms so the two cannot disagree; an explicit value
below the drain bound fails rendering.
*/}}
{{- define "ringtail.terminationGracePeriodSeconds" -}}
{{- $values := index .root.Values .component }}
{{- $sleep := int64 (default 0 $values.preStopSleepSeconds) }}
{{- $drain := int64 (include "ringtail.shutdownTimeoutSeconds" .root) }}
{{- $minimum := add $drain 1 $sleep }}
{{- if kindIs "invalid" $values.terminationGracePeriodSeconds }}
{{- add $drain $sleep (int64 .root.Values.terminationGraceMarginSeconds) | max $minimum }}
{{- else if lt (int64 $values.terminationGracePeriodSeconds) $minimum }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) is below the drain bound: config.shutdown_timeout_ms (%d s) + 1 s + preStopSleepSeconds (%d s) = %d s; Kubernetes would kill the node in mid-drain. Raise it or leave it null to derive it." .component (int64 $values.terminationGracePeriodSeconds) $drain $sleep $minimum) }}
{{- else }}
{{- int64 $values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{- define "ringtail.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* podAntiAffinity of one workload against its own pods, by host name. */}}
{{- define "ringtail.podAntiAffinity" -}}
{{- $values := index .root.Values .component -}}
{{- if eq $values.podAntiAffinity "hard" }}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "ringtail.componentSelectorLabels" . | nindent 10 }}
{{- else if eq $values.podAntiAffinity "soft" }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "ringtail.componentSelectorLabels" . | nindent 12 }}
{{- end }}
{{- end }}

{{/*
The pod spec shared by every workload: (dict "root" $ "component" "ingester"
"target" "ingester").
*/}}
{{- define "ringtail.podSpec" -}}
{{- $root := .root }}
{{- $values := index $root.Values .component }}
{{- $fs := eq $root.Values.storage.backend "filesystem" }}
{{- range $values.extraEnv }}
{{- if eq .name "RINGTAIL_SHUTDOWN_TIMEOUT_MS" }}
{{- fail "set config.shutdown_timeout_ms, not RINGTAIL_SHUTDOWN_TIMEOUT_MS in extraEnv: terminationGracePeriodSeconds is derived from config.shutdown_timeout_ms" }}
{{- end }}
{{- end -}}
serviceAccountName: {{ include "ringtail.serviceAccountName" $root }}
automountServiceAccountToken: false
# Service links would put RINGTAIL_<SERVICE>_... variables into the environment, where
# ringtail reads its RINGTAIL_* settings.
enableServiceLinks: false
terminationGracePeriodSeconds: {{ include "ringtail.terminationGracePeriodSeconds" . }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with (include "ringtail.podAntiAffinity" .) }}
affinity:
  {{- . | trim | nindent 2 }}
{{- end }}
{{- with merge (deepCopy (dig "zone" "nodeSelector" (dict) .)) ($values.nodeSelector | default (dict)) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  - name: {{ .component }}
    image: {{ include "ringtail.image" $root }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    command: [{{ $root.Values.image.binary | quote }}]
    args:
      - --config=/etc/ringtail/ringtail.yaml
      - --target={{ .target }}
    env:
      # node_name: stable per pod (an ingester's ring tokens derive from it).
      - name: RINGTAIL_NODE_NAME
        valueFrom:
          fieldRef:
            fieldPath: metadata.name
      {{- $zone := dig "zone" "name" "" . }}
      {{- if $zone }}
      # zone: the ingester's failure domain; replicas are placed in distinct zones.
      - name: RINGTAIL_ZONE
        value: {{ $zone | quote }}
      {{- else if and (eq .component "ingester") $values.zoneAwareness.enabled $values.zoneAwareness.zoneFromNodeLabel }}
      # zone: the node's topology label, copied onto the pod when it is bound (Kubernetes
      # 1.35+, KEP-4742); an empty zone stops the node with the reason.
      - name: RINGTAIL_ZONE
        valueFrom:
          fieldRef:
            fieldPath: metadata.labels['{{ $values.zoneAwareness.topologyKey }}']
      {{- end }}
      # advertise_addr: the IP peers dial for gossip, gRPC and HTTP.
      - name: RINGTAIL_ADVERTISE_ADDR
        valueFrom:
          fieldRef:
            fieldPath: status.podIP
      # Also in the config file; repeated here because the image sets these two as ENV,
      # and the environment beats the file.
      - name: RINGTAIL_DATA_DIR
        value: {{ include "ringtail.dataDir" $root | quote }}
      {{- if $fs }}
      - name: RINGTAIL_STORAGE_PATH
        value: {{ $root.Values.storage.filesystem.path | quote }}
      {{- end }}
      {{- with (include "ringtail.s3SecretName" $root) }}
      {{- if eq $root.Values.storage.backend "s3" }}
      - name: RINGTAIL_S3_ACCESS_KEY_ID
        valueFrom:
          secretKeyRef:
            name: {{ . }}
            key: {{ $root.Values.storage.s3.accessKeyIdKey }}
      - name: RINGTAIL_S3_SECRET_ACCESS_KEY
        valueFrom:
          secretKeyRef:
            name: {{ . }}
            key: {{ $root.Values.storage.s3.secretAccessKeyKey }}
      {{- end }}
      {{- end }}
      {{- if not $root.Values.config.insecure_cluster }}
      - name: RINGTAIL_CLUSTER_SECRET
        valueFrom:
          secretKeyRef:
            name: {{ include "ringtail.clusterSecretName" $root }}
            key: {{ $root.Values.clusterSecret.key }}
      {{- end }}
      {{- if and (eq .target "distributor") $root.Values.otlpTls.secretName }}
      - name: RINGTAIL_OTLP_TLS_CERT_FILE
        value: /etc/ringtail-tls/otlp/{{ $root.Values.otlpTls.certKey }}
      - name: RINGTAIL_OTLP_TLS_KEY_FILE
        value: /etc/ringtail-tls/otlp/{{ $root.Values.otlpTls.keyKey }}
      {{- end }}
      {{- with $root.Values.internalTls }}
      {{- if .secretName }}
      - name: RINGTAIL_INTERNAL_TLS_CERT_FILE
        value: /etc/ringtail-tls/internal/{{ .certKey }}
      - name: RINGTAIL_INTERNAL_TLS_KEY_FILE
        value: /etc/ringtail-tls/internal/{{ .keyKey }}
      - name: RINGTAIL_INTERNAL_TLS_CA_FILE
        value: /etc/ringtail-tls/internal/{{ .caKey }}
      - name: RINGTAIL_INTERNAL_TLS_SERVER_NAME
        value: {{ .serverName | quote }}
      {{- end }}
      {{- end }}
      {{- with $root.Values.httpTls }}
      {{- if .secretName }}
      - name: RINGTAIL_HTTP_TLS_CERT_FILE
        value: /etc/ringtail-tls/http/{{ .certKey }}
      - name: RINGTAIL_HTTP_TLS_KEY_FILE
        value: /etc/ringtail-tls/http/{{ .keyKey }}
      - name: RINGTAIL_HTTP_TLS_CA_FILE
        value: /etc/ringtail-tls/http/{{ .caKey }}
      - name: RINGTAIL_HTTP_TLS_SERVER_NAME
        value: {{ include "ringtail.httpTlsServerName" $root | quote }}
      {{- end }}
      {{- end }}
      {{- with $root.Values.adminToken.existingSecret }}
      - name: RINGTAIL_ADMIN_TOKEN
        valueFrom:
          secretKeyRef:
            name: {{ . }}
            key: {{ $root.Values.adminToken.key }}
      {{- end }}
      {{- with $values.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    ports:
      - name: http
        containerPort: {{ $root.Values.ports.http }}
        protocol: TCP
      - name: gossip
        containerPort: {{ $root.Values.ports.gossip }}
        protocol: UDP
      {{- if eq .target "ingester" }}
      - name: grpc
        containerPort: {{ $root.Values.ports.grpc }}
        protocol: TCP
      {{- end }}
      {{- if eq .target "distributor" }}
      - name: otlp-grpc
        containerPort: {{ $root.Values.ports.otlpGrpc }}
        protocol: TCP
      - name: otlp-http
        containerPort: {{ $root.Values.ports.otlpHttp }}
        protocol: TCP
      {{- end }}
    readinessProbe:
      httpGet:
        path: {{ $root.Values.readinessProbe.path }}
        port: http
        scheme: {{ include "ringtail.httpScheme" $root | upper }}
      periodSeconds: {{ $root.Values.readinessProbe.periodSeconds }}
      timeoutSeconds: {{ $root.Values.readinessProbe.timeoutSeconds }}
      failureThreshold: {{ $root.Values.readinessProbe.failureThreshold }}
    livenessProbe:
      httpGet:
        path: {{ $root.Values.livenessProbe.path }}
        port: http
        scheme: {{ include "ringtail.httpScheme" $root | upper }}
      initialDelaySeconds: {{ $root.Values.livenessProbe.initialDelaySeconds }}
      periodSeconds: {{ $root.Values.livenessProbe.periodSeconds }}
      timeoutSeconds: {{ $root.Values.livenessProbe.timeoutSeconds }}
      failureThreshold: {{ $root.Values.livenessProbe.failureThreshold }}
    {{- if eq .target "ingester" }}
    {{- if $values.preStop.enabled }}
    lifecycle:
      # Asks the node for its drain (POST /shutdown) without a shell or curl; the
      # SIGTERM that follows starts the same drain if the hook could not.
      preStop:
        exec:
          command:
            - {{ $root.Values.image.binary | quote }}
            - shutdown
            - --url={{ include "ringtail.httpScheme" $root }}://127.0.0.1:{{ $root.Values.ports.http }}/shutdown
    {{- end }}
    {{- else if gt (int64 (default 0 $values.preStopSleepSeconds)) 0 }}
    lifecycle:
      # Endpoints and load balancers drop a terminating pod with some delay: keep
      # serving meanwhile, then SIGTERM starts the shutdown.
      preStop:
        sleep:
          seconds: {{ int64 $values.preStopSleepSeconds }}
    {{- end }}
    securityContext:
      {{- toYaml $root.Values.containerSecurityContext | nindent 6 }}
    resources:
      {{- toYaml $values.resources | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: /etc/ringtail
        readOnly: true
      - name: tmp
        mountPath: /tmp
      {{- if $root.Values.overrides }}
      # A folder mount (no subPath): an edited ConfigMap reaches the file, and ringtail
      # re-reads it every 10 s.
      - name: overrides
        mountPath: /etc/ringtail-overrides
        readOnly: true
      {{- end }}
      {{- if eq .target "ingester" }}
      - name: data
        mountPath: {{ include "ringtail.dataDir" $root }}
      {{- end }}
      {{- if $fs }}
      - name: blocks
        mountPath: {{ $root.Values.storage.filesystem.path }}
      {{- end }}
      {{- if $root.Values.internalTls.secretName }}
      - name: internal-tls
        mountPath: /etc/ringtail-tls/internal
        readOnly: true
      {{- end }}
      {{- if $root.Values.httpTls.secretName }}
      - name: http-tls
        mountPath: /etc/ringtail-tls/http
        readOnly: true
      {{- end }}
      {{- if and (eq .target "distributor") $root.Values.otlpTls.secretName }}
      # The whole folder, not a subPath: the kubelet updates it when the Secret changes,
      # and ringtail reloads the certificate.
      - name: otlp-tls
        mountPath: /etc/ringtail-tls/otlp
        readOnly: true
      {{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "ringtail.fullname" $root }}
  - name: tmp
    emptyDir: {}
  {{- if $root.Values.overrides }}
  - name: overrides
    configMap:
      name: {{ include "ringtail.fullname" $root }}-overrides
  {{- end }}
  {{- if $fs }}
  - name: blocks
    persistentVolumeClaim:
      claimName: {{ include "ringtail.blocksClaimName" $root }}
  {{- end }}
  {{- with $root.Values.internalTls.secretName }}
  - name: internal-tls
    secret:
      secretName: {{ . }}
  {{- end }}
  {{- with $root.Values.httpTls.secretName }}
  - name: http-tls
    secret:
      secretName: {{ . }}
  {{- end }}
  {{- if and (eq .target "distributor") $root.Values.otlpTls.secretName }}
  - name: otlp-tls
    secret:
      secretName: {{ $root.Values.otlpTls.secretName }}
  {{- end }}
{{- end }}

{{/* Pod template metadata: (dict "root" $ "component" "ingester"). */}}
{{- define "ringtail.podMetadata" -}}
{{- $values := index .root.Values .component -}}
labels:
  {{- include "ringtail.componentSelectorLabels" . | nindent 2 }}
  {{- include "ringtail.zoneLabel" . | nindent 2 }}
  app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
  {{- with $values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
  {{- with $values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
