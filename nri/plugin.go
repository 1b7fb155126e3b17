package main

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"

	"github.com/containerd/nri/pkg/api"
)

// ImageNameAnnotation is where containerd names the image kubelet asked for (the only name
// of it NRI gives before containerd 2.4).
const ImageNameAnnotation = "io.kubernetes.cri.image-name"

// imageVolumeSource is where containerd (2.1 and later) mounts an image volume from:
// STATE/io.containerd.grpc.v1.cri/image-volumes/SANDBOX/MANIFEST-HEX[/SUBPATH]. NRI shows
// image volumes only as such mounts.
var imageVolumeSource = regexp.MustCompile(`/image-volumes/([^/]+)/([0-9a-f]{64})(?:/|$)`)

// ImageVolumes are the manifest digests of the container's image volumes in sandbox.
func ImageVolumes(sandbox string, container *api.Container) []string {
	var digests []string
	seen := map[string]bool{}
	for _, m := range container.GetMounts() {
		match := imageVolumeSource.FindStringSubmatch(m.GetSource())
		if match == nil || match[1] != sandbox {
			continue
		}
		digest := "sha256:" + match[2]
		if !seen[digest] {
			seen[digest] = true
			digests = append(digests, digest)
		}
	}
	return digests
}

// Plugin is the NRI validator: one question to the agent per container creation.
type Plugin struct {
	agent *AgentClient
	log   *slog.Logger
}

// Question builds the agent's question from the runtime's request: the pod, the container,
// the image as kubelet named it and, where the runtime gives it (containerd 2.4), its ID.
func Question(pod *api.PodSandbox, container *api.Container) DecisionRequest {
	q := DecisionRequest{
		Namespace: pod.GetNamespace(),
		Pod:       pod.GetName(),
		UID:       pod.GetUid(),
		Container: container.GetName(),
		Image:     container.GetAnnotations()[ImageNameAnnotation],
		// Every image the container will see: its image volumes too.
		ImageVolumes: ImageVolumes(pod.GetId(), container),
	}
	if image := container.GetImage(); image != nil {
		if q.Image == "" {
			q.Image = image.GetName()
		}
		q.ImageID = image.GetConfigDigest()
	}
	return q
}

// ValidateContainerAdjustment decides: nil lets the container be created, an error fails
// its creation with the error's text (kubelet shows it in the pod's events).
func (p *Plugin) ValidateContainerAdjustment(ctx context.Context, req *api.ValidateContainerAdjustmentRequest) error {
	q := Question(req.GetPod(), req.GetContainer())
	decision, err := p.agent.Decide(ctx, q)
	if err != nil {
		p.log.Warn("refused: no answer from the node agent", "pod", q.Namespace+"/"+q.Pod, "container", q.Container, "image", q.Image, "decision", "refused", "error", err)
		return fmt.Errorf("regcred: container %s of pod %s/%s is not created: the regcred node agent did not answer (%v); it is created once the agent is back", q.Container, q.Namespace, q.Pod, err)
	}
	if !decision.Allowed {
		p.log.Info("refused", "pod", q.Namespace+"/"+q.Pod, "container", q.Container, "image", q.Image, "decision", decision.Decision)
		return fmt.Errorf("%s", decision.Message)
	}
	p.log.Debug("allowed", "pod", q.Namespace+"/"+q.Pod, "container", q.Container, "image", q.Image, "decision", decision.Decision)
	return nil
}
