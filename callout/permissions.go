package callout

import (
	"slices"

	"github.com/nats-io/jwt/v2"
)

// smallList is the length up to which subjectList looks for duplicates by comparing with the
// entries kept so far: for the few subjects of a normal ServiceAccount that is cheaper than a
// map, and allocates nothing but the list.
const smallList = 32

// subjectList is subjects as a user JWT permission list: in order, without duplicates or empty
// strings, as jwt.StringList.Add builds it, but in linear time. Add checks each new entry
// against the whole list, which makes a list of tens of thousands of entries cost seconds.
func subjectList(subjects []string) jwt.StringList {
	if len(subjects) == 0 {
		return nil
	}
	out := make(jwt.StringList, 0, len(subjects))
	if len(subjects) <= smallList {
		for _, s := range subjects {
			if s != "" && !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
		return out
	}
	seen := make(map[string]struct{}, len(subjects))
	for _, s := range subjects {
		if _, dup := seen[s]; dup || s == "" {
			continue
		}
		seen[s] = struct{}{}
		out = append(out, s)
	}
	return out
}
