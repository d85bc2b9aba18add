package api

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/facegate/facegate/pkg/apiauth"
)

// BenchmarkCreatePerson: one create end to end (decode, publish, wait for
// the directory to apply it, audit record, response).
func BenchmarkCreatePerson(b *testing.B) {
	l := generous()
	l.Write = apiauth.Rate{PerSecond: 1e9, Burst: 1 << 30}
	e := newEnv(b, l)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		r := e.call(b, tokAdmin, "POST", "/v1/people", fmt.Sprintf(`{"person_id":"bench-%d","display_name":"B","site":"hq"}`, i))
		if r.status != http.StatusCreated {
			b.Fatalf("create: %d %s", r.status, r.body)
		}
	}
}

// BenchmarkVerify: one verify request end to end (multipart, face
// analysis, index search, audit record).
func BenchmarkVerify(b *testing.B) {
	e := newEnv(b, generous())
	createPerson(b, e, tokAdmin, "amy", "Amy", "hq")
	enrol(b, e, tokAdmin, "amy", crop(b, "amy", 1), crop(b, "amy", 2))
	probe := crop(b, "amy", 4)
	b.ResetTimer()
	for b.Loop() {
		r := verifyCall(b, e, tokAdmin, "amy", probe)
		if r.status != http.StatusOK {
			b.Fatalf("verify: %d %s", r.status, r.body)
		}
	}
}

// BenchmarkEnrolPhoto: one photo upload end to end (analysis, sealing,
// photo store, publish, wait for the directory).
func BenchmarkEnrolPhoto(b *testing.B) {
	e := newEnv(b, generous())
	createPerson(b, e, tokAdmin, "amy", "Amy", "hq")
	photos := []part{crop(b, "amy", 1), crop(b, "amy", 2), crop(b, "amy", 4), crop(b, "amy", 5)}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		// A fresh person when the photos run out (duplicates are refused).
		id := fmt.Sprintf("amy-%d", i/len(photos))
		if i%len(photos) == 0 {
			b.StopTimer()
			createPerson(b, e, tokAdmin, id, "Amy", "hq")
			b.StartTimer()
		}
		r := e.upload(b, tokAdmin, "/v1/people/"+id+"/photos", photos[i%len(photos)])
		if r.status != http.StatusCreated {
			b.Fatalf("enrol: %d %s", r.status, r.body)
		}
	}
}
