package probe

import (
	"reflect"
	"testing"

	"github.com/siftr-probe/siftr-probe/diag"
)

// TestAddDiag sets every field of diag.Stats to a distinct value and checks
// that addDiag sums each one, so that a counter added to diag.Stats later
// cannot be silently left at 0 in the summary, the stats file and the
// metrics.
func TestAddDiag(t *testing.T) {
	var a, b diag.Stats
	va, vb := reflect.ValueOf(&a).Elem(), reflect.ValueOf(&b).Elem()
	for i := range va.NumField() {
		if k := va.Field(i).Kind(); k != reflect.Uint64 {
			t.Fatalf("diag.Stats.%s is a %s: teach addDiag and this test about it", va.Type().Field(i).Name, k)
		}
		va.Field(i).SetUint(uint64(1000 * (i + 1)))
		vb.Field(i).SetUint(uint64(i + 1))
	}
	sum := addDiag(a, b)
	vs := reflect.ValueOf(sum)
	for i := range vs.NumField() {
		if got, want := vs.Field(i).Uint(), uint64(1001*(i+1)); got != want {
			t.Errorf("addDiag: %s = %d, want %d", vs.Type().Field(i).Name, got, want)
		}
	}
}
