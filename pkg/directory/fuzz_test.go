package directory

import (
	"encoding/json"
	"testing"

	"github.com/facegate/facegate/pkg/policy"
)

// FuzzDecodeSnapshot: whatever an opened snapshot holds, decoding returns a
// checked snapshot or an error, never a panic, and what it accepts loads.
func FuzzDecodeSnapshot(f *testing.F) {
	good, _ := json.Marshal(Snapshot{Version: 1, Sequence: 7, State: policy.Snapshot{
		People:   []policy.Person{{ID: "amy", BadgeIDs: []string{"B1"}}},
		Policies: []policy.Policy{{ID: "p", GroupIDs: []string{"g"}, Doors: []policy.DoorKey{{Site: "hq", Door: "d"}}, Schedule: "Mon 08:00-09:00", Effect: 1}},
	}, Spaces: []SnapshotSpace{{Name: "s", Dim: 2, Templates: []SnapshotTemplate{{ID: "t", Person: "amy", Vector: EncodeVector([]float32{0.6, 0.8})}}}}})
	f.Add(good)
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"spaces":[{"name":"s","dim":2,"templates":[{"id":"t","person":"p","vector":"AAAA"}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		snap, err := DecodeSnapshot(data)
		if err != nil {
			return
		}
		if _, err := policy.FromSnapshot(snap.State); err != nil {
			t.Fatalf("accepted a state FromSnapshot refuses: %v", err)
		}
		for _, sp := range snap.Spaces {
			for _, tm := range sp.Templates {
				if _, err := DecodeVector(tm.Vector, sp.Dim); err != nil {
					t.Fatalf("accepted a bad vector: %v", err)
				}
			}
		}
	})
}
