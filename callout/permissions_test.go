package callout

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/nats-io/jwt/v2"
)

// TestSubjectList checks that subjectList builds the list jwt.StringList.Add builds.
func TestSubjectList(t *testing.T) {
	cases := [][]string{
		nil,
		{},
		{""},
		{"a", "b", "a", "", "c", "b"},
		{">"},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100 { // lists on both sides of smallList
		l := make([]string, r.IntN(3*smallList))
		for i := range l {
			l[i] = fmt.Sprintf("s.%d", r.IntN(2*smallList))
			if r.IntN(10) == 0 {
				l[i] = ""
			}
		}
		cases = append(cases, l)
	}
	for _, in := range cases {
		var want jwt.StringList
		want.Add(in...)
		if got := subjectList(in); !slices.Equal(got, want) {
			t.Errorf("subjectList(%q) = %q, want %q", in, got, want)
		}
	}
}
