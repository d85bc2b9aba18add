package models_test

import (
	"strings"
	"testing"

	"github.com/facegate/facegate/models"
)

func TestEmbeddedManifestIsValid(t *testing.T) {
	m, err := models.Load()
	if err != nil {
		t.Fatal(err)
	}
	enc := m.DefaultEncoder()
	if enc == nil || enc.ID != "dlib-resnet34-128" || enc.Output.Size != 128 {
		t.Fatalf("default encoder = %+v, want the 128-d dlib model", enc)
	}
	for _, md := range m.Models {
		if md.ID == "mobilefacenet" || strings.Contains(md.ID, "mobilefacenet") {
			t.Fatalf("MobileFaceNet is broken as shipped and must not be in the manifest")
		}
	}
}

func TestManifestRejectsBadInput(t *testing.T) {
	good := `{"schema":1,"packages":[{"name":"p","version":"1","tarball_sha256":"` + strings.Repeat("a", 64) + `","files":[{"path":"m.bin","sha256":"` + strings.Repeat("b", 64) + `"}]}],"models":[{"id":"enc-1","role":"encoder","default":true,"package":"p","converter":"tfjs-graph","files":["m.bin"],"input":{"shape":[-1,8,8,3]}}]}`
	if _, err := models.Parse([]byte(good)); err != nil {
		t.Fatalf("valid manifest rejected: %v", err)
	}
	bad := map[string]string{
		"unknown field":  strings.Replace(good, `"schema":1`, `"schema":1,"extra":true`, 1),
		"bad sha":        strings.Replace(good, strings.Repeat("a", 64), "abc", 1),
		"escaping path":  strings.ReplaceAll(good, "m.bin", "../m.bin"),
		"unlisted file":  strings.Replace(good, `"files":["m.bin"]`, `"files":["x.bin"]`, 1),
		"unknown pkg":    strings.Replace(good, `"package":"p"`, `"package":"q"`, 1),
		"no default":     strings.Replace(good, `"default":true`, `"default":false`, 1),
		"bad threshold":  strings.Replace(good, `"role":"encoder"`, `"role":"encoder","threshold":2.5`, 1),
		"bad shape":      strings.Replace(good, `[-1,8,8,3]`, `[-1,8,8]`, 1),
		"bad id":         strings.Replace(good, `"enc-1"`, `"Enc 1"`, 1),
		"not json":       `{"schema":`,
		"wrong schema":   strings.Replace(good, `"schema":1`, `"schema":2`, 1),
		"no version":     strings.Replace(good, `"version":"1"`, `"version":""`, 1),
		"default detect": strings.Replace(good, `"role":"encoder"`, `"role":"detector"`, 1),
	}
	for name, doc := range bad {
		if _, err := models.Parse([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
