// Command floor is the least an auth callout for ServiceAccount tokens can do, for the load run
// to measure the service against: it verifies the server's request, verifies the RS256 token
// against the JWKS, signs a user JWT and signs the response. No ServiceAccount lookup, no
// policy, no logs, no metrics, no encryption. It is a yardstick, never a service.
//
//	NATS_URL=nats://127.0.0.1:4222 FLOOR_SERVICE_SEED_FILE=service.nk FLOOR_ISSUER_SEED_FILE=issuer.nk \
//	FLOOR_JWKS_FILE=jwks.json JWT_ISSUER=https://... JWT_AUDIENCE=nats NATS_ACCOUNT=APP floor
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/MicahParks/keyfunc/v3"
	gojwt "github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// claims are the parts of a ServiceAccount token the floor reads.
type claims struct {
	gojwt.RegisteredClaims
	Kubernetes struct {
		Namespace string `json:"namespace"`
	} `json:"kubernetes.io"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func seed(env string) (nkeys.KeyPair, error) {
	b, err := os.ReadFile(os.Getenv(env)) //nolint:gosec // a yardstick run by the load test, reading the files it is given
	if err != nil {
		return nil, fmt.Errorf("%s: %w", env, err)
	}
	return nkeys.FromSeed(bytes.TrimSpace(b))
}

func run() error {
	service, err := seed("FLOOR_SERVICE_SEED_FILE")
	if err != nil {
		return err
	}
	issuer, err := seed("FLOOR_ISSUER_SEED_FILE")
	if err != nil {
		return err
	}
	jwks, err := os.ReadFile(os.Getenv("FLOOR_JWKS_FILE")) //nolint:gosec // as above
	if err != nil {
		return fmt.Errorf("FLOOR_JWKS_FILE: %w", err)
	}
	kf, err := keyfunc.NewJWKSetJSON(jwks)
	if err != nil {
		return err
	}
	parser := gojwt.NewParser(gojwt.WithValidMethods([]string{"RS256"}), gojwt.WithIssuer(os.Getenv("JWT_ISSUER")),
		gojwt.WithAudience(os.Getenv("JWT_AUDIENCE")), gojwt.WithExpirationRequired())
	account := os.Getenv("NATS_ACCOUNT")

	pub, err := service.PublicKey()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(os.Getenv("NATS_URL"), nats.Nkey(pub, service.Sign), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	_, err = nc.QueueSubscribe("$SYS.REQ.USER.AUTH", "floor", func(m *nats.Msg) {
		resp, err := answer(m.Data, parser, kf.Keyfunc, issuer, account)
		if err == nil {
			_ = m.Respond(resp)
		}
	})
	if err != nil {
		return err
	}
	if err := nc.Flush(); err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	return nc.Drain()
}

// answer does the protocol's own work for one request.
func answer(data []byte, parser *gojwt.Parser, keys gojwt.Keyfunc, issuer nkeys.KeyPair, account string) ([]byte, error) {
	req, err := jwt.DecodeAuthorizationRequestClaims(string(data))
	if err != nil {
		return nil, err
	}
	vr := jwt.CreateValidationResults()
	req.Validate(vr)
	if vr.IsBlocking(true) {
		return nil, errors.New("invalid request")
	}
	rc := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	rc.Audience = req.Server.ID
	var c claims
	if _, err := parser.ParseWithClaims(req.ConnectOptions.Token, &c, keys); err != nil || c.Kubernetes.Namespace == "" {
		rc.Error = "not authorized"
	} else {
		uc := jwt.NewUserClaims(req.UserNkey)
		uc.Audience = account
		uc.Expires = c.ExpiresAt.Unix()
		uc.Pub.Allow.Add(c.Kubernetes.Namespace + ".>")
		uc.Sub.Allow.Add(c.Kubernetes.Namespace+".>", "_INBOX.>")
		if rc.Jwt, err = uc.Encode(issuer); err != nil {
			return nil, err
		}
	}
	tok, err := rc.Encode(issuer)
	return []byte(tok), err
}
