package installer

import (
	"fmt"
	"io"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/settings"
)

// Init is every setting of the init command.
type Init struct {
	// Out is the directory the files are written to.
	Out     string
	Options InstallOptions
}

// InitTable is the settings of init, bound to c.
func InitTable(c *Init) settings.Table {
	o := &c.Options
	return settings.Table{
		Command: "init",
		Usage: "Usage: nats-k8s-oidc-callout init [flags]\n\n" +
			"Generates the service's keys and writes the Secret manifest, the matching nats-server\n" +
			"configuration and Helm values into a directory. Re-running it against an existing Secret\n" +
			"is refused unless an issuer rotation is asked for, or the Secret lacks the system account\n" +
			"user of live revocation (it is added; no other key changes).\n\n",
		NoEnv: true,
		Settings: []*settings.Setting{
			settings.String(&c.Out, "", "out", "nats-callout", "output directory (secret.yaml is written with mode 0600)"),
			settings.String(&o.Namespace, "", "namespace", "", "namespace of the NATS release (required on first run)"),
			settings.String(&o.SecretName, "", "secret-name", "", "name of the Secret (default "+DefaultSecretName+")"),
			settings.String(&o.CalloutAccount, "", "callout-account", "", "callout account holding only the service user (default "+DefaultCalloutAccount+")"),
			settings.Func("account", "comma-separated target accounts; the first is NATS_ACCOUNT (default "+DefaultTargetAccount+")",
				func(v string) error { o.TargetAccounts = settings.SplitList(v); return nil }),
			settings.Func("tenant-accounts", "comma-separated tenant accounts a namespace's nats.io/account label may name (the sidecar's NATS_ALLOWED_ACCOUNTS)",
				func(v string) error { o.TenantAccounts = settings.SplitList(v); return nil }),
			settings.String(&o.SystemAccount, "", "system-account", "", "system account, never a callout target (default "+DefaultSystemAccount+")"),
			settings.Bool(&o.JetStream, "", "jetstream", false, "enable JetStream in the target and bypass accounts"),
			settings.Repeated("bypass-user", "ACCOUNT=U... a user that logs in with its own nkey and never reaches the callout, e.g. NACK", func(s string) error {
				u, err := ParseBypassUser(s)
				if err == nil {
					o.BypassUsers = append(o.BypassUsers, u)
				}
				return err
			}),
			settings.Bool(&o.Rotate, "", "rotate", false, "rotate the issuer key: the new seed is added next to the old one"),
			settings.Bool(&o.FinishRotation, "", "finish-rotation", false, "finish an issuer rotation: drop the old seed"),
		},
	}
}

// ParseInit reads init's flags.
func ParseInit(args []string, output io.Writer) (Init, error) {
	var c Init
	if _, err := InitTable(&c).ParseNoArgs(args, nil, output); err != nil {
		return c, fmt.Errorf("init: %w", err)
	}
	return c, nil
}
