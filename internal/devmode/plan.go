package devmode

import (
	"errors"
	"strings"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// account is a ServiceAccount with the permissions it gets.
type account struct {
	Namespace, Name string
	Perms           kube.Permissions
}

func (a account) String() string { return a.Namespace + "/" + a.Name }

// parseAccounts parses the policy of each ServiceAccount; refused ones are left out.
func parseAccounts(sas []kube.ServiceAccount, defaults kube.PolicyDefaults) []account {
	var out []account
	for _, sa := range sas {
		p, err := kube.ParsePolicy(defaults, sa.Namespace, sa.Name, sa.Annotations)
		if err != nil {
			continue
		}
		out = append(out, account{Namespace: sa.Namespace, Name: sa.Name, Perms: p.Permissions})
	}
	return out
}

// demo is the scenario dev mode prints and --check runs, chosen from the ServiceAccounts.
type demo struct {
	// Publisher may publish Subject; Responder may subscribe to it and answer requests.
	Publisher, Responder account
	Subject              string
	// Refused is a subject Publisher may not publish to; "" if it may publish everywhere.
	Refused string
	// InboxRefused says Publisher may not subscribe to the shared _INBOX.> replies.
	InboxRefused bool
}

// planDemo picks the scenario: the first ServiceAccount that may publish a subject another
// ServiceAccount answers on (one in another namespace preferred, then another one in the same
// namespace, then itself), and a subject it may not publish, taken from what the others may use.
func planDemo(accounts []account) (demo, error) {
	for _, a := range accounts {
		best, ok := bestResponder(a, accounts)
		if !ok {
			continue
		}
		best.Refused = refusedSubject(a, accounts)
		best.InboxRefused = !a.Perms.AllowsSubscribe("_INBOX.demo.demo")
		return best, nil
	}
	return demo{}, errors.New("no ServiceAccount may publish to a subject that a ServiceAccount allowed to respond may subscribe to")
}

// bestResponder finds, for a subject a may publish, the ServiceAccount to answer it: one in
// another namespace preferred, then another one in the same namespace, then a itself.
func bestResponder(a account, accounts []account) (demo, bool) {
	best, bestScore := demo{}, 0
	for _, pat := range a.Perms.PubAllow {
		s := concreteSubject(pat)
		if strings.HasPrefix(s, "_INBOX") || !a.Perms.AllowsPublish(s) {
			continue
		}
		for _, b := range accounts {
			if !b.Perms.AllowResponses || !b.Perms.AllowsSubscribe(s) {
				continue
			}
			score := 1
			switch {
			case b.Namespace != a.Namespace:
				score = 3
			case b.Name != a.Name:
				score = 2
			}
			if score > bestScore {
				best, bestScore = demo{Publisher: a, Responder: b, Subject: s}, score
			}
		}
	}
	return best, bestScore > 0
}

// refusedSubject is a subject a may not publish, taken from what the others may use, then
// from a's own denials; "" if a may publish everywhere.
func refusedSubject(a account, accounts []account) string {
	var candidates []string
	for _, o := range accounts {
		if o.String() != a.String() {
			candidates = append(candidates, o.Perms.PubAllow...)
			candidates = append(candidates, o.Perms.SubAllow...)
		}
	}
	candidates = append(candidates, a.Perms.PubDeny...)
	candidates = append(candidates, "demo.refused")
	for _, pat := range candidates {
		if s := concreteSubject(pat); !strings.HasPrefix(s, "_INBOX") && !a.Perms.AllowsPublish(s) {
			return s
		}
	}
	return ""
}

// concreteSubject turns a permission subject into one a client can publish to.
func concreteSubject(pattern string) string {
	parts := strings.Split(pattern, ".")
	for i, t := range parts {
		if t == "*" || t == ">" {
			parts[i] = "demo"
		}
	}
	return strings.Join(parts, ".")
}
