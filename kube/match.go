package kube

import "strings"

// AllowsPublish reports whether p lets a client publish to subject, deciding as nats-server
// does for a literal subject: some publish allow entry matches it and no deny entry does.
// Replies allowed by AllowResponses are not considered. A subject with wildcards, which cannot
// be published to, is never allowed.
func (p Permissions) AllowsPublish(subject string) bool {
	return allows(p.PubAllow, p.PubDeny, subject)
}

// AllowsSubscribe reports whether p lets a client subscribe to the literal subject (a
// subscription without wildcards): some subscribe allow entry matches it and no deny entry does.
func (p Permissions) AllowsSubscribe(subject string) bool {
	return allows(p.SubAllow, p.SubDeny, subject)
}

func allows(allow, deny []string, subject string) bool {
	if validSubject(subject) != nil || strings.ContainsAny(subject, "*>") {
		return false
	}
	matchesAny := func(patterns []string) bool {
		for _, pat := range patterns {
			if subjectMatches(pat, subject) {
				return true
			}
		}
		return false
	}
	return matchesAny(allow) && !matchesAny(deny)
}

// subjectMatches reports whether the literal subject matches pattern, where '*' matches one
// token and a final '>' one or more.
func subjectMatches(pattern, subject string) bool {
	pt, st := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, p := range pt {
		switch {
		case p == ">":
			return len(st) > i
		case i >= len(st):
			return false
		case p != "*" && p != st[i]:
			return false
		}
	}
	return len(pt) == len(st)
}

// subjectWithin reports whether every subject pattern matches is also matched by limit (both
// valid subjects; '*' one token, a final '>' one or more).
func subjectWithin(pattern, limit string) bool {
	return tokensWithin(strings.Split(pattern, "."), strings.Split(limit, "."))
}

// tokensWithin is subjectWithin on subjects split into tokens.
func tokensWithin(pt, lt []string) bool {
	for i, l := range lt {
		switch {
		case l == ">":
			return len(pt) > i
		case i >= len(pt), pt[i] == ">":
			return false
		case l != "*" && pt[i] != l:
			return false
		}
	}
	return len(pt) == len(lt)
}

// subjectsOverlap reports whether some literal subject matches both patterns (valid subjects;
// '*' one token, a final '>' one or more).
func subjectsOverlap(a, b string) bool {
	for {
		at, arest, amore := strings.Cut(a, ".")
		bt, brest, bmore := strings.Cut(b, ".")
		switch {
		case at == ">" || bt == ">":
			return true // the other has a token here, and '>' takes it and whatever follows
		case at != "*" && bt != "*" && at != bt:
			return false
		case !amore || !bmore:
			return amore == bmore
		}
		a, b = arest, brest
	}
}
