package revoke

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// nats-server's system API (the system account's $SYS.REQ.SERVER subjects).
const (
	// connzAll asks every server of the cluster for its connections. (nats-server answers it
	// for any account, with that account's connections only: idzAll, which only the system
	// account's users can reach, tells them apart.)
	connzAll = "$SYS.REQ.SERVER.PING.CONNZ"
	idzAll   = "$SYS.REQ.SERVER.PING.IDZ"
	// connzOne and kickOne address one server by its id.
	connzOne = "$SYS.REQ.SERVER.%s.CONNZ"
	kickOne  = "$SYS.REQ.SERVER.%s.KICK"
	// pageSize is how many connections one server lists per answer: a few hundred bytes each,
	// well inside a message's 1 MiB.
	pageSize = 1024
	// requestTimeout bounds one request to one server.
	requestTimeout = 2 * time.Second
	// maxPages bounds the pages read from one server in one sweep (a million connections).
	maxPages = 1024
)

// connzRequest is the part of nats-server's connz options a sweep uses: open connections, by
// cid, with their user.
type connzRequest struct {
	Auth   bool   `json:"auth"`
	Sort   string `json:"sort"`
	Offset int    `json:"offset"`
	Limit  int    `json:"limit"`
}

// apiResponse is nats-server's system API answer.
type apiResponse[T any] struct {
	Server struct {
		Name string `json:"name"`
		ID   string `json:"id"`
	} `json:"server"`
	Data  T `json:"data"`
	Error *struct {
		Code        int    `json:"code"`
		Description string `json:"description"`
	} `json:"error"`
}

type connz struct {
	Total int        `json:"total"`
	Conns []connInfo `json:"connections"`
}

// connInfo is what a sweep reads of a connection.
type connInfo struct {
	CID     uint64 `json:"cid"`
	Account string `json:"account"`
	User    string `json:"authorized_user"`
	IP      string `json:"ip"`
}

// server is one server's connections.
type server struct {
	name, id string
	conns    []connInfo
}

// sweep lists the cluster's connections and closes those batch concerns.
func (r *Revoker) sweep(nc *nats.Conn, batch map[kube.Revocation]time.Time) error {
	servers, err := r.connections(nc)
	if err != nil {
		return err
	}
	// A change concerns connections of its own namespace only: each connection is matched
	// against its namespace's changes, not the whole batch.
	type change struct {
		rv kube.Revocation
		at time.Time
	}
	byNamespace := map[string][]change{}
	for rv, at := range batch {
		byNamespace[rv.Namespace] = append(byNamespace[rv.Namespace], change{rv, at})
	}
	var failed error
	for _, srv := range servers {
		for _, c := range srv.conns {
			id, ok := kube.ParseConnectionName(c.User)
			if !ok {
				continue // not a ServiceAccount's connection
			}
			for _, ch := range byNamespace[id.Namespace] {
				if !ch.rv.Matches(id) || ch.rv.Account != "" && c.Account == ch.rv.Account {
					continue
				}
				if err := r.kick(nc, srv, c, id, ch.rv, ch.at); err != nil {
					failed = err
				}
				break
			}
		}
	}
	return failed
}

// connections asks every server for its open connections and pages through each one's.
func (r *Revoker) connections(nc *nats.Conn) ([]server, error) {
	if _, err := nc.Request(idzAll, nil, requestTimeout); errors.Is(err, nats.ErrNoResponders) {
		return nil, errors.New("nats-server's system API does not answer: NATS_SYSTEM_CREDS_FILE must be a user of the system account")
	} else if err != nil {
		return nil, err
	}
	first, err := r.ping(nc)
	if err != nil {
		return nil, err
	}
	servers := make([]server, 0, len(first))
	for _, resp := range first {
		srv := server{name: resp.Server.Name, id: resp.Server.ID, conns: resp.Data.Conns}
		for page := 1; len(srv.conns) < resp.Data.Total && page < maxPages; page++ {
			next, err := request[connz](nc, fmt.Sprintf(connzOne, srv.id), connzRequest{Auth: true, Sort: "cid", Offset: len(srv.conns), Limit: pageSize})
			if err != nil {
				return nil, fmt.Errorf("connections of server %s: %w", srv.name, err)
			}
			if len(next.Data.Conns) == 0 {
				break // closed meanwhile
			}
			srv.conns = append(srv.conns, next.Data.Conns...)
		}
		servers = append(servers, srv)
	}
	return servers, nil
}

// ping asks every server of the cluster for its first page of connections and gathers the
// answers: until Gather has passed, or none has come for a tenth of it after the first.
func (r *Revoker) ping(nc *nats.Conn) ([]apiResponse[connz], error) {
	body, err := json.Marshal(connzRequest{Auth: true, Sort: "cid", Limit: pageSize})
	if err != nil {
		return nil, err
	}
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(connzAll, inbox, body); err != nil {
		return nil, err
	}
	var out []apiResponse[connz]
	deadline := time.Now().Add(r.cfg.Gather)
	wait := r.cfg.Gather
	for {
		m, err := sub.NextMsg(min(wait, time.Until(deadline)))
		if err != nil {
			if errors.Is(err, nats.ErrTimeout) && len(out) > 0 {
				return out, nil
			}
			if errors.Is(err, nats.ErrTimeout) {
				return nil, errors.New("no nats-server answered the connection list request: is NATS_SYSTEM_CREDS_FILE a user of the system account?")
			}
			return nil, err
		}
		var resp apiResponse[connz]
		if err := json.Unmarshal(m.Data, &resp); err != nil {
			return nil, fmt.Errorf("connection list: %w", err)
		}
		if resp.Error != nil {
			return nil, fmt.Errorf("connection list from server %s: %s", resp.Server.Name, resp.Error.Description)
		}
		out = append(out, resp)
		wait = r.cfg.Gather / 10
	}
}

// request sends one request to one server and decodes its answer.
func request[T any](nc *nats.Conn, subject string, req any) (apiResponse[T], error) {
	var resp apiResponse[T]
	body, err := json.Marshal(req)
	if err != nil {
		return resp, err
	}
	m, err := nc.Request(subject, body, requestTimeout)
	if err != nil {
		return resp, err
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return resp, err
	}
	if resp.Error != nil {
		return resp, errors.New(resp.Error.Description)
	}
	return resp, nil
}

// kick closes one connection on the server that holds it, and logs and counts it. A connection
// already gone (closed by the client, or by a peer sidecar acting on the same change) is neither.
func (r *Revoker) kick(nc *nats.Conn, srv server, c connInfo, id kube.Identity, rv kube.Revocation, at time.Time) error {
	_, err := request[json.RawMessage](nc, fmt.Sprintf(kickOne, srv.id), struct {
		CID uint64 `json:"cid"`
	}{c.CID})
	if err != nil {
		if strings.Contains(err.Error(), "no such client") || strings.Contains(err.Error(), "not found") {
			r.log.Debug("connection to revoke already closed", "server", srv.name, "client_id", c.CID)
			return nil
		}
		return fmt.Errorf("close connection %d on server %s: %w", c.CID, srv.name, err)
	}
	r.revoked.WithLabelValues(rv.Reason).Inc()
	r.latency.Observe(time.Since(at).Seconds())
	attrs := []any{"reason", rv.Reason, "namespace", id.Namespace, "serviceaccount", id.Name, "uid", id.UID}
	if id.PodName != "" {
		attrs = append(attrs, "pod", id.PodName)
	}
	attrs = append(attrs, "server", srv.name, "client_id", c.CID, "client_ip", c.IP, "account", c.Account,
		"since_change_ms", time.Since(at).Milliseconds())
	r.log.Info("connection revoked", attrs...)
	return nil
}
