package devmode

import (
	"os"
	"strings"
	"testing"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// exampleManifest is settings.DefaultDevManifest seen from this package's directory, where the
// tests run.
const exampleManifest = "../../examples/serviceaccounts.yaml"

func TestPlanDemo(t *testing.T) {
	sas, err := kube.ParseServiceAccounts(mustRead(t, exampleManifest))
	if err != nil {
		t.Fatal(err)
	}
	p, err := planDemo(parseAccounts(sas, kube.PolicyDefaults{}))
	if err != nil {
		t.Fatal(err)
	}
	got := []string{p.Publisher.String(), p.Subject, p.Responder.String(), p.Refused}
	want := []string{"shop/orders", "billing.charges.create", "billing/payments", "billing.invoices.demo"}
	if strings.Join(got, " ") != strings.Join(want, " ") || !p.InboxRefused {
		t.Errorf("plan = %v inbox refused %v, want %v and true", got, p.InboxRefused, want)
	}

	// A lone ServiceAccount answers itself and is refused outside its namespace.
	alone, err := kube.ParseServiceAccounts([]byte("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: solo\n  namespace: team\n"))
	if err != nil {
		t.Fatal(err)
	}
	p, err = planDemo(parseAccounts(alone, kube.PolicyDefaults{}))
	if err != nil {
		t.Fatal(err)
	}
	if p.Publisher.String() != "team/solo" || p.Responder.String() != "team/solo" || p.Subject != "team.demo" || p.Refused != "demo.refused" {
		t.Errorf("lone plan = %+v", p)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
