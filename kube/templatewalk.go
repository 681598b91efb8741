package kube

// Walking two token templates at once. A side's state is its item index and, inside a
// placeholder, the state of that placeholder's automaton (0: not started).
type sideState struct {
	idx int
	v   int8
}

// walkState is both sides' states and what the walk has seen.
type walkState struct {
	s [2]sideState
	// sync: both sides are inside placeholders of one kind that started at the same place.
	sync bool
	// ended: side 0 or 1 (as 1 or 2) ended its synced placeholder here; the other may not end
	// its own at the same place except by lining up (a move of its own).
	ended int8
	// pinned[k]: a placeholder of kind k has been lined up.
	pinned [2]bool
}

// walkStep is how a state was first reached, to rebuild the string.
type walkStep struct {
	prev walkState
	c    byte // 0 for a move that reads no character
}

// relate walks the two token templates over every string both can render.
func relate(x, y []item) (tokenRelation, error) {
	sides := [2][]item{x, y}
	var rel tokenRelation
	start := walkState{}
	from := map[walkState]walkStep{start: {}}
	queue := []walkState{start}
	visit := func(next, prev walkState, c byte) {
		if _, seen := from[next]; !seen {
			from[next] = walkStep{prev: prev, c: c}
			queue = append(queue, next)
		}
	}
	for len(queue) > 0 {
		if len(from) > maxCollisionStates {
			return tokenRelation{}, errTooComplex
		}
		st := queue[0]
		queue = queue[1:]
		done := st.s[0].idx == len(x) && st.s[1].idx == len(y)
		if done {
			rel.sat = true
			for k := range 2 {
				if !st.pinned[k] && rel.unpinned[k] == nil {
					rel.unpinned[k] = rebuild(sides, from, st)
				}
			}
			continue
		}
		// Moves that read nothing: a side ends its placeholder, or both end synced ones.
		for side := range 2 {
			ss := st.s[side]
			if !placeholderCanEnd(sides[side], ss) || st.ended == int8(2-side) {
				continue
			}
			next := st
			next.s[side] = sideState{idx: ss.idx + 1}
			if st.sync {
				next.sync, next.ended = false, int8(side+1)
			}
			visit(next, st, 0)
		}
		if st.sync && placeholderCanEnd(x, st.s[0]) && placeholderCanEnd(y, st.s[1]) {
			next := st
			next.s[0], next.s[1] = sideState{idx: st.s[0].idx + 1}, sideState{idx: st.s[1].idx + 1}
			next.sync = false
			next.pinned[kindIndex(x[st.s[0].idx].kind)] = true
			visit(next, st, 0)
		}
		// Moves that read a character: every literal either side expects, and for placeholders
		// any letter or digit (anyAlnum), '-' and '_'.
		for _, c := range candidates(sides, st) {
			var next walkState
			next.pinned = st.pinned
			started := [2]byte{}
			ok := true
			for side := range 2 {
				ns, kind, moved := stepSide(sides[side], st.s[side], c)
				if !moved {
					ok = false
					break
				}
				next.s[side] = ns
				if st.s[side].v == 0 && kind != 0 {
					started[side] = kind
				}
			}
			if !ok {
				continue
			}
			switch {
			case started[0] != 0 && started[0] == started[1]:
				next.sync = true
			case started[0] == 0 && started[1] == 0:
				next.sync = st.sync
			}
			visit(next, st, c)
		}
	}
	return rel, nil
}

func kindIndex(kind byte) int {
	if kind == 'T' {
		return 1
	}
	return 0
}

// placeholderCanEnd reports whether the side is inside a placeholder that may end here.
func placeholderCanEnd(items []item, ss sideState) bool {
	return ss.idx < len(items) && items[ss.idx].kind != 0 && ss.v == 1
}

// stepSide reads c on one side; kind is the placeholder it is in, 0 for a literal.
func stepSide(items []item, ss sideState, c byte) (sideState, byte, bool) {
	if ss.idx == len(items) {
		return ss, 0, false
	}
	it := items[ss.idx]
	if it.kind == 0 {
		if ss.v == 0 && c == it.c {
			return sideState{idx: ss.idx + 1}, 0, true
		}
		return ss, 0, false
	}
	v, ok := placeholderStep(it.kind, ss.v, c)
	if !ok {
		return ss, 0, false
	}
	return sideState{idx: ss.idx, v: v}, it.kind, true
}

// anyAlnum stands for any letter or digit read inside a placeholder: no literal matches it
// (templates hold no control characters), and rebuild spells it out.
const anyAlnum = 0x01

// placeholderStep is the automaton of a rendered placeholder. Namespace, a DNS label: 1 after
// a letter or digit (may end), 2 after '-'. Serviceaccount, DNS subdomain labels joined by
// '_': the same, and 3 after '_'.
func placeholderStep(kind byte, v int8, c byte) (int8, bool) {
	alnum := c == anyAlnum || c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
	switch {
	case alnum:
		return 1, true
	case c == '-' && (v == 1 || v == 2):
		return 2, true
	case c == '_' && kind == 'T' && v == 1:
		return 3, true
	}
	return 0, false
}

// candidates are the characters worth reading next: what a literal on either side expects, and
// for placeholders one of each class.
func candidates(sides [2][]item, st walkState) []byte {
	out := make([]byte, 0, 6)
	add := func(c byte) {
		for _, o := range out {
			if o == c {
				return
			}
		}
		out = append(out, c)
	}
	inPlaceholder := false
	for side := range 2 {
		ss := st.s[side]
		if ss.idx == len(sides[side]) {
			return nil
		}
		if it := sides[side][ss.idx]; it.kind == 0 {
			add(it.c)
		} else {
			inPlaceholder = true
		}
	}
	if inPlaceholder {
		for _, c := range []byte{anyAlnum, '-', '_'} {
			add(c)
		}
	}
	return out
}

// rebuild walks back from st to the start and returns the values each side's first namespace
// and serviceaccount placeholders took. Any letter or digit read inside placeholders is spelled
// out by position ('a' at 0, 'b' at 1, ...), so that placeholders not lined up differ in value.
func rebuild(sides [2][]item, from map[walkState]walkStep, st walkState) *witness {
	var steps []walkStep
	var states []walkState
	for cur := st; ; {
		step := from[cur]
		if cur == (walkState{}) && step == (walkStep{}) {
			break
		}
		steps, states = append(steps, step), append(states, cur)
		cur = step.prev
	}
	var w witness
	var text []byte
	var open [2][]int // per side: start of the placeholder it is in, and its kind, or nil
	for i := len(steps) - 1; i >= 0; i-- {
		step, cur := steps[i], states[i]
		prev := step.prev
		if step.c != 0 {
			c := step.c
			if c == anyAlnum {
				c = 'a' + byte(len(text)%26)
			}
			text = append(text, c)
		}
		for side := range 2 {
			p, n := prev.s[side], cur.s[side]
			if p.idx < len(sides[side]) && sides[side][p.idx].kind != 0 {
				if p.v == 0 && n.v != 0 {
					open[side] = []int{len(text) - 1, int(sides[side][p.idx].kind)}
				}
				if n.idx == p.idx+1 && open[side] != nil {
					value := string(text[open[side][0]:])
					if open[side][1] == 'N' && w.ns[side] == "" {
						w.ns[side] = value
					}
					if open[side][1] == 'T' && w.sa[side] == "" {
						w.sa[side] = value
					}
					open[side] = nil
				}
			}
		}
	}
	return &w
}
