package controller

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	facegatev1 "github.com/facegate/facegate/operator/api/v1alpha1"
)

// Labels the operator puts on what it creates. Other components select on
// them (NetworkPolicies, dashboards), so they are stable.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelComponent = "app.kubernetes.io/component"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelPool      = "facegate.io/pool"
	LabelModelID   = "facegate.io/model-id"
	LabelGallery   = "facegate.io/gallery"
	LabelModel     = "facegate.io/model"

	managedBy = "facegate-operator"
)

// shorten returns s when it fits in n characters, otherwise a prefix and a
// hash of the whole, so distinct long names stay distinct.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	h := hex.EncodeToString(sum[:])[:8]
	return strings.TrimRight(s[:n-9], "-.") + "-" + h
}

// labelValue makes a name usable as a label value (63 characters, no dots
// at the ends).
func labelValue(s string) string { return shorten(s, 63) }

// CollectionName is the vector collection holding one model build's
// templates in one gallery. It includes the artefact hash: two builds of the
// same network produce incomparable encodings and must never share one.
// The characters suit Milvus (letters, digits, underscores).
func CollectionName(gallery string, m *facegatev1.FaceModel) string {
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			switch {
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
				return r
			}
			return '_'
		}, s)
	}
	sha := m.Spec.Artifact.SHA256
	if len(sha) > 12 {
		sha = sha[:12]
	}
	prefix := "fg"
	if gallery != "" {
		prefix += "_" + clean(gallery)
	}
	return prefix + "_" + clean(m.Spec.ModelID) + "_" + sha
}

// galleryPoolName is the EmbedderPool of one gallery pool for one model.
func galleryPoolName(gallery, pool, model string) string {
	return shorten(gallery+"-"+pool+"-"+model, 253)
}

// durableName derives a JetStream durable name from a pool name (dots are
// not allowed in durable names).
func durableName(pool string) string {
	return strings.ReplaceAll(pool, ".", "_")
}

// reembedJobName is the Job rebuilding a gallery for a model; job names end
// up in a pod label, hence 63 characters.
func reembedJobName(gallery, model string) string {
	return shorten(gallery+"-reembed-"+model, 63)
}
