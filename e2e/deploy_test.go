//go:build e2e

package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
)

// deployment is what one NATS pod runs: a nats-server and the callout sidecar next to it,
// with the sidecar's credentials in a Secret volume.
type deployment struct {
	dir  string
	keys deployKeys
	conf natsConf
	vol  *secretVolume
	nats *natsServer
	svc  *calloutService
}

type deployOpts struct {
	// xkey encrypts callouts: auth_callout.xkey in the server, NATS_XKEY_FILE in the service.
	xkey bool
	// serviceWithoutXKey leaves NATS_XKEY_FILE unset even when the server encrypts.
	serviceWithoutXKey bool
	// static adds an account with its own static user that bypasses the callout.
	static *staticUser
	// serviceEnv adds settings to the service.
	serviceEnv []string
	// tls puts TLS on nats-server's client port.
	tls *tlsConf
	// accounts are more accounts in the server config, e.g. tenant accounts.
	accounts []string
	// revocation adds a system account user and turns on live revocation
	// (NATS_SYSTEM_CREDS_FILE).
	revocation bool
}

// deployKeys are the nkeys of one deployment.
type deployKeys struct {
	service nkeys.KeyPair // the service's login (SU.../U...)
	issuer  nkeys.KeyPair // auth_callout.issuer (SA.../A...)
	xkey    nkeys.KeyPair // auth_callout.xkey (SX.../X...)
}

func newUserKey(t *testing.T) nkeys.KeyPair {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	noteSeed(t, kp, "user seed")
	return kp
}

func newAccountKey(t *testing.T) nkeys.KeyPair {
	t.Helper()
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	noteSeed(t, kp, "issuer account seed")
	return kp
}

func newCurveKey(t *testing.T) nkeys.KeyPair {
	t.Helper()
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	noteSeed(t, kp, "xkey curve seed")
	return kp
}

func noteSeed(t *testing.T, kp nkeys.KeyPair, what string) {
	t.Helper()
	suite.noteSecret(string(seedOf(t, kp)), what)
}

func pubOf(t *testing.T, kp nkeys.KeyPair) string {
	t.Helper()
	p, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func seedOf(t *testing.T, kp nkeys.KeyPair) []byte {
	t.Helper()
	s, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// seedFile is the content of a Secret key holding seeds: one per line.
func seedFile(t *testing.T, kps ...nkeys.KeyPair) []byte {
	t.Helper()
	var b []byte
	for _, kp := range kps {
		b = append(b, seedOf(t, kp)...)
		b = append(b, '\n')
	}
	return b
}

func newDeployment(t *testing.T, o deployOpts) *deployment {
	t.Helper()
	d, env := newNATSDeployment(t, o)
	d.svc = startService(t, d.dir, "callout", d.nats.url(), d.vol, serviceOpts{
		xkey: o.xkey && !o.serviceWithoutXKey, env: env,
	})
	return d
}

// newNATSDeployment is newDeployment without the service: the keys, the Secret volume and
// nats-server, and the settings the service would get beyond startService's.
func newNATSDeployment(t *testing.T, o deployOpts) (*deployment, []string) {
	t.Helper()
	d := &deployment{dir: testDir(t)}
	d.keys = deployKeys{service: newUserKey(t), issuer: newAccountKey(t)}
	files := map[string][]byte{
		keyService: seedFile(t, d.keys.service),
		keyIssuer:  seedFile(t, d.keys.issuer),
	}
	d.conf = natsConf{issuer: pubOf(t, d.keys.issuer), serviceUsers: []string{pubOf(t, d.keys.service)}, static: o.static, tls: o.tls, accounts: o.accounts}
	if o.xkey {
		d.keys.xkey = newCurveKey(t)
		files[keyXKey] = seedFile(t, d.keys.xkey)
		d.conf.xkey = pubOf(t, d.keys.xkey)
	}
	if o.static != nil {
		suite.noteSecret(o.static.password, "static user password")
	}
	env := o.serviceEnv
	if o.revocation {
		system := newUserKey(t)
		files[keySystem] = seedFile(t, system)
		d.conf.systemUser = pubOf(t, system)
	}
	d.vol = newSecretVolume(t, d.dir+"/secret", files)
	if o.revocation {
		env = append([]string{"NATS_SYSTEM_CREDS_FILE=" + d.vol.path(keySystem)}, env...)
	}
	d.nats = startNATS(t, d.dir, "nats", d.conf)
	return d, env
}

// restartNATS rewrites nats-server's configuration and restarts it: a change to auth_callout
// (issuer, auth_users, xkey) needs a restart, nats-server cannot reload it. It returns the
// window in which clients may fail: from the stop until the sidecar has reconnected and
// reports ready again.
func (d *deployment) restartNATS(t *testing.T, conf natsConf) window {
	t.Helper()
	d.conf = conf
	d.nats.setConfig(t, conf)
	reconnects := d.svc.metrics(t).sum("nats_callout_nats_reconnects_total")
	w := window{what: "nats-server restart", from: time.Now()}
	d.nats.restart(t)
	eventually(t, 30*time.Second, "the sidecar reconnected and ready", func() error {
		if got := d.svc.metrics(t).sum("nats_callout_nats_reconnects_total"); got <= reconnects {
			return fmt.Errorf("reconnects still %g", got)
		}
		code, body, err := d.svc.get("/readyz")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("/readyz %d: %s", code, body)
		}
		return nil
	})
	w.to = time.Now()
	return w
}

// reloadNATS rewrites nats-server's configuration and has it reloaded (SIGHUP): enough for
// changes outside auth_callout, such as the users of the AUTH account. It returns the window
// from the signal until the reload was logged: nats-server 2.15 closes every client the
// callout authorized on any reload (in server-config mode it no longer finds their user in its
// config), so connections in that instant fail and established ones reconnect.
func (d *deployment) reloadNATS(t *testing.T, conf natsConf) window {
	t.Helper()
	d.conf = conf
	d.nats.setConfig(t, conf)
	w := window{what: "nats-server reload", from: time.Now()}
	d.nats.reload(t)
	w.to = time.Now()
	return w
}
