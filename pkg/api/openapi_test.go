package api

import (
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const specPath = "../../api/openapi.yaml"

func loadSpec(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("parse %s: %v", specPath, err)
	}
	return doc
}

var httpMethods = []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}

// TestOpenAPIMatchesRoutes: every route the mux serves is documented, and
// every documented operation is served.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := loadSpec(t)
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.1") {
		t.Fatalf("openapi version %q, want 3.1.x", v)
	}
	paths, ok := doc["paths"].(map[string]any)
	if !ok {
		t.Fatal("no paths")
	}
	documented := map[string]bool{}
	for p, item := range paths {
		ops, _ := item.(map[string]any)
		for _, m := range httpMethods {
			if _, ok := ops[m]; ok {
				documented[strings.ToUpper(m)+" "+p] = true
			}
		}
	}
	registered := map[string]bool{}
	for _, rt := range (&Server{}).routes() {
		registered[rt.Method+" "+rt.Path] = true
	}
	var missing, extra []string
	for r := range registered {
		if !documented[r] {
			missing = append(missing, r)
		}
	}
	for d := range documented {
		if !registered[d] {
			extra = append(extra, d)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("routes not documented in %s: %v", specPath, missing)
	}
	if len(extra) > 0 {
		t.Errorf("documented operations the mux does not serve: %v", extra)
	}
	if len(registered) < 18 {
		t.Fatalf("only %d routes registered", len(registered))
	}
}

// TestOpenAPIConsistent: every $ref resolves, every path parameter is
// declared, every operation has security (global) and an error schema for
// its 4xx responses, and both security schemes exist.
func TestOpenAPIConsistent(t *testing.T) {
	doc := loadSpec(t)
	resolve := func(ref string) (any, bool) {
		if !strings.HasPrefix(ref, "#/") {
			return nil, false
		}
		var cur any = doc
		for _, tok := range strings.Split(ref[2:], "/") {
			m, ok := cur.(map[string]any)
			if !ok {
				return nil, false
			}
			if cur, ok = m[tok]; !ok {
				return nil, false
			}
		}
		return cur, true
	}
	var walk func(v any, where string)
	walk = func(v any, where string) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["$ref"].(string); ok {
				if _, ok := resolve(ref); !ok {
					t.Errorf("%s: $ref %q does not resolve", where, ref)
				}
			}
			for k, c := range x {
				walk(c, where+"/"+k)
			}
		case []any:
			for _, c := range x {
				walk(c, where)
			}
		}
	}
	walk(doc, "")

	schemes, _ := resolve("#/components/securitySchemes")
	sm, _ := schemes.(map[string]any)
	if b, _ := sm["bearer"].(map[string]any); b["type"] != "http" || b["scheme"] != "bearer" {
		t.Errorf("bearer scheme %v", sm["bearer"])
	}
	if m, _ := sm["mtls"].(map[string]any); m["type"] != "mutualTLS" {
		t.Errorf("mtls scheme %v", sm["mtls"])
	}
	if sec, _ := doc["security"].([]any); len(sec) != 2 {
		t.Errorf("global security %v, want bearer and mtls", doc["security"])
	}

	paramRe := regexp.MustCompile(`\{([^}]+)\}`)
	paramNames := func(list any) map[string]bool {
		out := map[string]bool{}
		l, _ := list.([]any)
		for _, p := range l {
			pm, _ := p.(map[string]any)
			if ref, ok := pm["$ref"].(string); ok {
				r, _ := resolve(ref)
				pm, _ = r.(map[string]any)
			}
			if pm["in"] == "path" {
				out[pm["name"].(string)] = true
			}
		}
		return out
	}
	paths := doc["paths"].(map[string]any)
	for p, item := range paths {
		ops := item.(map[string]any)
		common := paramNames(ops["parameters"])
		for _, m := range httpMethods {
			op, ok := ops[m].(map[string]any)
			if !ok {
				continue
			}
			declared := paramNames(op["parameters"])
			for _, match := range paramRe.FindAllStringSubmatch(p, -1) {
				if !common[match[1]] && !declared[match[1]] {
					t.Errorf("%s %s: path parameter %q not declared", m, p, match[1])
				}
			}
			resps, _ := op["responses"].(map[string]any)
			for _, code := range []string{"401", "429"} {
				if _, ok := resps[code]; !ok {
					t.Errorf("%s %s: no %s response", m, p, code)
				}
			}
			if _, ok := op["operationId"].(string); !ok {
				t.Errorf("%s %s: no operationId", m, p)
			}
		}
	}
}
