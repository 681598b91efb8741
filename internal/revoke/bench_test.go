package revoke

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// BenchmarkSweep is one sweep of a real nats-server with 2,000 connections named as the callout
// names its users, none of them concerned (the whole list is read and matched, nothing is
// closed): its time, and the bytes of connection list it reads per connection.
//
//	go test -run '^$' -bench Sweep ./internal/revoke/
func BenchmarkSweep(b *testing.B) {
	const conns = 2000
	sys, err := nkeys.CreateUser()
	if err != nil {
		b.Fatal(err)
	}
	var users strings.Builder
	for i := range 20 {
		id := kube.Identity{Namespace: "shop", Name: fmt.Sprintf("app-%d", i), UID: fmt.Sprintf("0c6d3f2e-1b4a-4c8e-9f00-%012d", i),
			PodName: fmt.Sprintf("app-%d-7d9f8c6b5-x2k4q", i), PodUID: fmt.Sprintf("3b1e7a90-5c2d-4e6f-8a1b-%012d", i)}
		fmt.Fprintf(&users, "{user: %q, password: pw}\n", id.ConnectionName())
	}
	srv, _ := testsupport.StartNATS(b, fmt.Sprintf(`
listen: 127.0.0.1:-1
max_connections: 10000
accounts {
  SYS: { users: [ {nkey: %s} ] }
  APP: { users: [ %s ] }
}
system_account: SYS
`, testsupport.PublicKey(b, sys), users.String()))
	for i := range conns {
		id := kube.Identity{Namespace: "shop", Name: fmt.Sprintf("app-%d", i%20), UID: fmt.Sprintf("0c6d3f2e-1b4a-4c8e-9f00-%012d", i%20),
			PodName: fmt.Sprintf("app-%d-7d9f8c6b5-x2k4q", i%20), PodUID: fmt.Sprintf("3b1e7a90-5c2d-4e6f-8a1b-%012d", i%20)}
		nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(id.ConnectionName(), "pw"), nats.NoReconnect())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
	}
	creds, err := callout.ParseCredentials(testsupport.Seed(b, sys))
	if err != nil {
		b.Fatal(err)
	}
	r, err := New(Config{URL: srv.ClientURL(), Credentials: func() *callout.Credentials { return creds }, Gather: 200 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	nc, err := r.connect()
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	// The bytes one server's list takes, by its own answer to the same request.
	var listBytes int
	for offset := 0; offset < conns+10; offset += pageSize {
		body, _ := json.Marshal(connzRequest{Auth: true, Sort: "cid", Offset: offset, Limit: pageSize})
		m, err := nc.Request(fmt.Sprintf(connzOne, srv.ID()), body, requestTimeout)
		if err != nil {
			b.Fatal(err)
		}
		listBytes += len(m.Data)
	}
	batch := map[kube.Revocation]time.Time{{Reason: kube.RevokePodDeleted, Namespace: "bank", PodUID: "none"}: time.Now()}
	b.ResetTimer()
	for b.Loop() {
		if err := r.sweep(nc, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(listBytes)/conns, "list-B/conn")
}
