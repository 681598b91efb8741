package callout

import "github.com/nats-io/jwt/v2"

// subjectList is subjects as a user JWT permission list: in order, without duplicates or empty
// strings, as jwt.StringList.Add builds it, but in linear time. Add checks each new entry
// against the whole list, which makes a list of tens of thousands of entries cost seconds.
func subjectList(subjects []string) jwt.StringList {
	if len(subjects) == 0 {
		return nil
	}
	out := make(jwt.StringList, 0, len(subjects))
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
