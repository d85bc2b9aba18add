package tfjs

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// modelFile is the part of a tfjs model.json this converter reads.
// modelTopology is a TensorFlow GraphDef in protobuf's JSON mapping.
type modelFile struct {
	Format          string          `json:"format"`
	GeneratedBy     any             `json:"generatedBy"`
	ConvertedBy     any             `json:"convertedBy"`
	ModelTopology   *graphDef       `json:"modelTopology"`
	WeightsManifest []manifestGroup `json:"weightsManifest"`
}

type graphDef struct {
	Node []tfNode `json:"node"`
}

type tfNode struct {
	Name  string               `json:"name"`
	Op    string               `json:"op"`
	Input []string             `json:"input"`
	Attr  map[string]attrValue `json:"attr"`
}

// attrValue mirrors tensorflow.AttrValue; only one field is set.
type attrValue struct {
	S      *string     `json:"s"` // base64, as protobuf JSON encodes bytes
	I      *flexInt    `json:"i"`
	F      *flexFloat  `json:"f"`
	B      *bool       `json:"b"`
	Type   string      `json:"type"`
	Shape  *shapeProto `json:"shape"`
	List   *attrList   `json:"list"`
	Tensor *struct {
		Dtype string `json:"dtype"`
	} `json:"tensor"`
}

type attrList struct {
	S []string    `json:"s"`
	I []flexInt   `json:"i"`
	F []flexFloat `json:"f"`
	B []bool      `json:"b"`
}

type shapeProto struct {
	Dim []struct {
		Size flexInt `json:"size"`
	} `json:"dim"`
	UnknownRank bool `json:"unknownRank"`
}

// flexInt accepts an int64 written as a JSON number or, as protobuf's JSON
// mapping does for 64-bit integers, as a string.
type flexInt int64

func (v *flexInt) UnmarshalJSON(b []byte) error {
	s := string(bytes.Trim(b, `"`))
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("integer %s: %w", b, err)
	}
	*v = flexInt(n)
	return nil
}

// flexFloat accepts a number or the strings protobuf uses for non-finite
// values ("NaN", "Infinity", "-Infinity").
type flexFloat float64

func (v *flexFloat) UnmarshalJSON(b []byte) error {
	s := string(bytes.Trim(b, `"`))
	switch s {
	case "NaN":
		*v = flexFloat(math.NaN())
		return nil
	case "Infinity":
		*v = flexFloat(math.Inf(1))
		return nil
	case "-Infinity":
		*v = flexFloat(math.Inf(-1))
		return nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("number %s: %w", b, err)
	}
	*v = flexFloat(f)
	return nil
}

func parseModel(data []byte) (*modelFile, error) {
	var m modelFile
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("tfjs: parse model.json: %w", err)
	}
	if m.ModelTopology == nil {
		return nil, fmt.Errorf("tfjs: model.json has no modelTopology (a layers model or weights-only manifest is not a graph model)")
	}
	if len(m.ModelTopology.Node) == 0 {
		return nil, fmt.Errorf("tfjs: modelTopology has no nodes")
	}
	return &m, nil
}

// inputRef splits a GraphDef input reference ("name", "name:0", "^name").
// Control dependencies carry no data and are reported so callers skip them.
func inputRef(ref string) (name string, control bool, err error) {
	if strings.HasPrefix(ref, "^") {
		return ref[1:], true, nil
	}
	name = ref
	if i := strings.LastIndexByte(ref, ':'); i >= 0 {
		idx, perr := strconv.Atoi(ref[i+1:])
		if perr == nil {
			if idx != 0 {
				return "", false, fmt.Errorf("input %q: output index %d of a multi-output op is not supported", ref, idx)
			}
			name = ref[:i]
		}
	}
	if name == "" {
		return "", false, fmt.Errorf("empty input reference")
	}
	return name, false, nil
}

// attribute accessors; ok=false means the attribute is absent.

func (n *tfNode) attrString(key string) (string, bool, error) {
	a, ok := n.Attr[key]
	if !ok || a.S == nil {
		return "", false, nil
	}
	b, err := base64.StdEncoding.DecodeString(*a.S)
	if err != nil {
		return "", false, fmt.Errorf("attribute %q: bad base64: %w", key, err)
	}
	return string(b), true, nil
}

func (n *tfNode) attrStrings(key string) ([]string, bool, error) {
	a, ok := n.Attr[key]
	if !ok || a.List == nil {
		return nil, false, nil
	}
	out := make([]string, len(a.List.S))
	for i, s := range a.List.S {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, false, fmt.Errorf("attribute %q: bad base64: %w", key, err)
		}
		out[i] = string(b)
	}
	return out, true, nil
}

func (n *tfNode) attrInts(key string) ([]int64, bool) {
	a, ok := n.Attr[key]
	if !ok || a.List == nil {
		return nil, false
	}
	out := make([]int64, len(a.List.I))
	for i, v := range a.List.I {
		out[i] = int64(v)
	}
	return out, true
}

func (n *tfNode) attrBool(key string) bool {
	a, ok := n.Attr[key]
	return ok && a.B != nil && *a.B
}

func (n *tfNode) attrFloat(key string, def float64) float64 {
	a, ok := n.Attr[key]
	if !ok || a.F == nil {
		return def
	}
	return float64(*a.F)
}

func (n *tfNode) attrShape(key string) ([]int64, error) {
	a, ok := n.Attr[key]
	if !ok || a.Shape == nil {
		return nil, fmt.Errorf("attribute %q (shape) missing", key)
	}
	if a.Shape.UnknownRank {
		return nil, fmt.Errorf("attribute %q: unknown rank", key)
	}
	out := make([]int64, len(a.Shape.Dim))
	for i, d := range a.Shape.Dim {
		out[i] = int64(d.Size)
	}
	return out, nil
}

func (n *tfNode) attrType(key string) string {
	return n.Attr[key].Type
}
