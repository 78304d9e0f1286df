{{/* The base name of every object: the release's. */}}
{{- define "driftwatch.name" -}}
{{- if eq .Values.mode "sidecar" -}}
{{- .Values.workload.name -}}
{{- else -}}
{{- .Release.Name -}}
{{- end -}}
{{- end -}}

{{/* Labels of driftwatch's own objects. */}}
{{- define "driftwatch.labels" -}}
app.kubernetes.io/name: {{ include "driftwatch.name" . }}
app.kubernetes.io/component: driftwatch
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/* The pods' selector labels. */}}
{{- define "driftwatch.selector" -}}
{{- if eq .Values.mode "sidecar" -}}
{{- toYaml .Values.workload.labels -}}
{{- else -}}
app.kubernetes.io/name: {{ include "driftwatch.name" . }}
app.kubernetes.io/component: driftwatch
{{- end -}}
{{- end -}}

{{/* Where each secret is mounted. */}}
{{- define "driftwatch.secretFiles" -}}
webhookSecret: webhook-secret
slackWebhookUrl: slack-webhook-url
pagerdutyRoutingKey: pagerduty-routing-key
alertmanagerBearerToken: alertmanager-bearer-token
postgresUrl: postgres-url
{{- end -}}

{{/* The driftwatch container. `restartPolicy: Always` makes it a native
     sidecar when it sits among the init containers. */}}
{{- define "driftwatch.container" -}}
- name: driftwatch
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if eq .Values.mode "sidecar" }}
  restartPolicy: Always
  {{- end }}
  args: ["run", "--config", "/etc/driftwatch/driftwatch.toml"]
  env:
    - name: DRIFTWATCH_LOG_FORMAT
      value: json
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
    {{- if eq .Values.mode "sidecar" }}
    # OTLP on localhost for the application; admin (metrics, API, incident
    # pages) on the pod IP for Prometheus and the probes.
    - name: DRIFTWATCH_RECEIVER__GRPC_LISTEN
      value: 127.0.0.1:4317
    - name: DRIFTWATCH_RECEIVER__HTTP_LISTEN
      value: 127.0.0.1:4318
    {{- else }}
    - name: DRIFTWATCH_RECEIVER__GRPC_LISTEN
      value: $(POD_IP):4317
    - name: DRIFTWATCH_RECEIVER__HTTP_LISTEN
      value: $(POD_IP):4318
    {{- end }}
    - name: DRIFTWATCH_ADMIN__LISTEN
      value: $(POD_IP):9464
    - name: DRIFTWATCH_STORE__PATH
      value: /var/lib/driftwatch
    - name: DRIFTWATCH_STORE__REPLICA
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    {{- if .Values.secrets.postgresUrl.secretName }}
    - name: DRIFTWATCH_STORE__POSTGRES_URL_FILE
      value: /var/run/secrets/driftwatch/postgres-url
    {{- end }}
  ports:
    - name: metrics
      containerPort: 9464
    {{- if ne .Values.mode "sidecar" }}
    - name: otlp-grpc
      containerPort: 4317
    - name: otlp-http
      containerPort: 4318
    {{- end }}
  startupProbe:
    httpGet:
      path: /readyz
      port: metrics
    periodSeconds: 1
    failureThreshold: 30
  readinessProbe:
    httpGet:
      path: /readyz
      port: metrics
    periodSeconds: 5
  livenessProbe:
    httpGet:
      path: /healthz
      port: metrics
    periodSeconds: 10
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    runAsUser: 65532
    runAsGroup: 65532
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: ["ALL"]
  volumeMounts:
    - name: driftwatch-config
      mountPath: /etc/driftwatch
      readOnly: true
    - name: driftwatch-store
      mountPath: /var/lib/driftwatch
    {{- if .Values.gitSync.enabled }}
    - name: repos
      mountPath: /repos
      readOnly: true
    {{- end }}
    {{- if include "driftwatch.anySecret" . }}
    - name: driftwatch-secrets
      mountPath: /var/run/secrets/driftwatch
      readOnly: true
    {{- end }}
{{- if .Values.gitSync.enabled }}
- name: git-sync
  image: {{ .Values.gitSync.image }}
  {{- if eq .Values.mode "sidecar" }}
  restartPolicy: Always
  {{- end }}
  args:
    - --repo={{ .Values.gitSync.repo }}
    - --ref={{ .Values.gitSync.ref }}
    - --root=/repos
    - --link={{ .Values.gitSync.link }}
    - --period={{ .Values.gitSync.period }}
    - --depth={{ .Values.gitSync.depth }}
  securityContext:
    runAsUser: 65533
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: ["ALL"]
  resources:
    requests:
      cpu: 10m
      memory: 32Mi
  volumeMounts:
    - name: repos
      mountPath: /repos
{{- end }}
{{- end -}}

{{/* Non-empty when any secret is configured. */}}
{{- define "driftwatch.anySecret" -}}
{{- range $name, $ref := .Values.secrets }}{{ if $ref.secretName }}yes{{ end }}{{ end -}}
{{- end -}}

{{/* driftwatch's volumes. */}}
{{- define "driftwatch.volumes" -}}
- name: driftwatch-config
  configMap:
    name: {{ include "driftwatch.name" . }}-driftwatch
- name: driftwatch-store
  emptyDir: {}
{{- if .Values.gitSync.enabled }}
- name: repos
  emptyDir: {}
{{- end }}
{{- if include "driftwatch.anySecret" . }}
- name: driftwatch-secrets
  projected:
    sources:
      {{- $files := include "driftwatch.secretFiles" . | fromYaml }}
      {{- range $name, $ref := .Values.secrets }}
      {{- if $ref.secretName }}
      - secret:
          name: {{ $ref.secretName }}
          items:
            - key: {{ $ref.key }}
              path: {{ index $files $name }}
      {{- end }}
      {{- end }}
{{- end }}
{{- end -}}

{{/* Pod Security "restricted" at the pod level. No pod-wide UID: the
     application keeps its own. */}}
{{- define "driftwatch.podSecurity" -}}
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end -}}
