{{/*
regcred's chart helpers. Object names are fixed (regcred-webhook, regcred-cri-proxy, ...),
not derived from the release name: the cluster-scoped objects (the webhook
configuration, the admission policy, the ClusterRoles) allow one install per cluster.
*/}}

{{/* helm.sh/chart: name-version, as a label value. */}}
{{- define "regcred.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{/*
The labels of every object: the component's own (app.kubernetes.io/name and /component,
when given) and the chart's. Call with a dict:
  include "regcred.labels" (dict "ctx" $ "name" "regcred-webhook" "component" "admission-webhook")
Selectors and pod templates never use these: they keep the name label only (and the
component where they always had it), so an upgrade never changes an immutable selector
and a chart version bump alone does not roll the pods.
*/}}
{{- define "regcred.labels" -}}
{{- with .name }}app.kubernetes.io/name: {{ . }}
{{ end -}}
{{- with .component }}app.kubernetes.io/component: {{ . }}
{{ end -}}
app.kubernetes.io/part-of: regcred
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
helm.sh/chart: {{ include "regcred.chart" .ctx }}
{{- end }}

{{/*
The image every component runs: repository@digest when image.digest is set (the tag is
then only informative), else repository:tag, the tag defaulting to the chart's appVersion.
*/}}
{{- define "regcred.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (toString ($image.tag | default .Chart.AppVersion)) -}}
{{- end -}}
{{- end }}

{{/* A pod spec's imagePullSecrets from the value (names, or {name: ...} maps); call inside `with .Values.imagePullSecrets`. */}}
{{- define "regcred.imagePullSecrets" -}}
{{- range . }}
- name: {{ if kindIs "map" . }}{{ .name }}{{ else }}{{ . }}{{ end }}
{{- end }}
{{- end }}

{{/* The webhook Service's DNS names: what its serving certificate is for. */}}
{{- define "regcred.webhook.dnsNames" -}}
- regcred-webhook.{{ .Release.Namespace }}.svc
- regcred-webhook.{{ .Release.Namespace }}.svc.cluster.local
{{- end }}

{{/*
The ConfigMap's policy-config.yaml: the site policy (schemas/policy-config.schema.json).
The Deployment's checksum/policy annotation hashes exactly this text.
*/}}
{{- define "regcred.webhook.policyConfig" -}}
{{- if .Values.webhook.policy -}}
{{- toYaml .Values.webhook.policy -}}
{{- else -}}
{{- "{}" -}}
{{- end -}}
{{- end }}

{{/* The Secret types the webhook is sent (the configuration's matchCondition). */}}
{{- define "regcred.webhook.secretTypes" -}}
{{- $types := list "'kubernetes.io/regcredentials'" -}}
{{- if .Values.webhook.checkDockerSecrets -}}
{{- $types = concat $types (list "'kubernetes.io/dockerconfigjson'" "'kubernetes.io/dockercfg'") -}}
{{- end -}}
{{- join ", " $types -}}
{{- end }}

{{/*
The checks a value schema cannot express (combinations of values); each fails the
render with what to change. Included once, from templates/validate.yaml.
*/}}
{{- define "regcred.validate" -}}
{{- $modes := list "selfManaged" "certManager" "secret" -}}
{{- if not (has .Values.webhook.certificate.mode $modes) -}}
{{- fail (printf "webhook.certificate.mode is %q: use selfManaged, certManager or secret" (toString .Values.webhook.certificate.mode)) -}}
{{- end -}}
{{- $nodeModes := list "nri" "runtime-proxy" "credential-provider" "none" -}}
{{- if not (has .Values.node.mode $nodeModes) -}}
{{- fail (printf "node.mode is %q: use nri, runtime-proxy, credential-provider or none" (toString .Values.node.mode)) -}}
{{- end -}}
{{- if not (has .Values.node.apiCredentials (list "node" "serviceAccount")) -}}
{{- fail (printf "node.apiCredentials is %q: use node or serviceAccount" (toString .Values.node.apiCredentials)) -}}
{{- end -}}
{{- if and .Values.node.daemonSet.enabled (ne .Values.node.mode "runtime-proxy") -}}
{{- fail (printf "node.daemonSet.enabled runs the runtime proxy (regcred cri-proxy) on the nodes: it needs node.mode=runtime-proxy, not %q" (toString .Values.node.mode)) -}}
{{- end -}}
{{- if and .Values.node.installer.enabled (not (has .Values.node.mode (list "nri" "runtime-proxy"))) -}}
{{- fail (printf "node.installer.enabled installs the node agent as a host service: it needs node.mode nri or runtime-proxy, not %q" (toString .Values.node.mode)) -}}
{{- end -}}
{{- if and .Values.node.installer.enabled .Values.node.daemonSet.enabled -}}
{{- fail "node.installer.enabled and node.daemonSet.enabled both run the node agent: choose one (the installer's host service is the supported way)" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.webhook.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled scrapes the webhook's Service: it needs webhook.enabled" -}}
{{- end -}}
{{- end }}

{{/*
The pod of the node installer's DaemonSets: `regcred node ARGS --host-root /host ...` on
each node, privileged with the host's PID namespace and root file system, so that it
writes the host's files and reaches its systemd (regcred node host-exec). Call with a
dict: include "regcred.node.installerPod" (dict "ctx" $ "args" (list "install" ...) "expect" "installed")
*/}}
{{- define "regcred.node.installerPod" -}}
{{- $ctx := .ctx -}}
{{- $in := $ctx.Values.node.installer -}}
metadata:
  labels:
    app.kubernetes.io/name: {{ .name }}
    app.kubernetes.io/component: node-installer
  annotations:
    # It must run on a node whose containerd requires regcred-nri while regcred-nri is
    # not there (a fresh node, or one being cleaned up); the release namespace may carry
    # the annotation (templates/node/nri-toleration.yaml).
    tolerate-missing-plugins.nri.regcred.dev/pod: "true"
spec:
  hostPID: true
  # The host's network: the installer needs none of its own, and a node whose pod
  # network is not ready yet (a fresh node, a broken CNI) can still be installed and
  # cleaned up.
  hostNetwork: true
  automountServiceAccountToken: false
  {{- with $ctx.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- include "regcred.imagePullSecrets" . | trim | nindent 4 }}
  {{- end }}
  {{- with $in.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $in.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $in.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  terminationGracePeriodSeconds: 5
  containers:
    - name: {{ .container }}
      image: {{ include "regcred.image" $ctx }}
      imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
      args:
        - node
        {{- range .args }}
        - {{ . }}
        {{- end }}
        - --host-root=/host
        - --kubelet-config-dir={{ $in.kubeletConfigDir }}
        - --containerd-config-dir={{ $in.containerdConfigDir }}
        - --stay
      env:
        # `install` records it on the node; the probe's `status` wants it there, so a
        # new pod (a new image) is Ready once it has installed the node itself, not
        # while the previous version's install stands (the roll-out's next node waits).
        - name: REGCRED_INSTALLER_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.uid
      # Ready once the host is as this pod makes it (exit 1 of `install` or `uninstall`
      # restarts the pod; `install` has then put the node back as it was).
      readinessProbe:
        exec:
          command:
            - /usr/local/bin/regcred
            - node
            - status
            - --host-root=/host
            - --state-dir=/var/lib/regcred/node-install
            - --expect={{ .expect }}
        periodSeconds: 5
        # A process start and a stat of each installed file (their identities were
        # recorded at the install; only a file changed since is read and hashed).
        timeoutSeconds: 5
      {{- with $in.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        # Writes the host's /etc, /opt and /var/lib/regcred and joins PID 1's
        # namespaces to run systemctl: nothing less than privileged does both.
        privileged: true
        runAsUser: 0
        runAsNonRoot: false
        readOnlyRootFilesystem: true
      volumeMounts:
        - name: host
          mountPath: /host
  volumes:
    - name: host
      hostPath:
        path: /
        type: Directory
{{- end }}
