{{/* Labels of one component (gateway or agent). */}}
{{- define "triage.labels" -}}
app.kubernetes.io/name: triage
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The pod's security settings, the same for both. */}}
{{- define "triage.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The triage container's ports and probes, the same for both. */}}
{{- define "triage.ports" -}}
ports:
  - name: otlp-grpc
    containerPort: 4317
  - name: otlp-http
    containerPort: 4318
  - name: query
    containerPort: 4320
  - name: admin
    containerPort: 8888
livenessProbe:
  httpGet:
    path: /healthz
    port: admin
  initialDelaySeconds: 5
  periodSeconds: 10
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
  periodSeconds: 5
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
{{- end -}}
