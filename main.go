// Command nats-k8s-oidc-callout answers NATS auth callout requests for Kubernetes workloads:
// a client connects with its ServiceAccount token and gets a NATS user scoped by the
// ServiceAccount's namespace and annotations.
//
// main only dispatches the subcommands and builds the real dependencies; the run loop is
// internal/sidecar, the settings internal/settings.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/metadata"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/devmode"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/explain"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/installer"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/logging"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/settings"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/sidecar"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs one subcommand and returns the exit code.
func run(ctx context.Context, args []string, lookup func(string) (string, bool), stdout, stderr io.Writer) int {
	cmd, args := settings.Command(args)
	var err error
	switch cmd {
	case "serve":
		err = serve(ctx, args, lookup, stdout, stderr)
	case "dev":
		var c settings.Dev
		if c, err = settings.ParseDev(args, stderr); err == nil {
			v, commit := versionInfo()
			err = devmode.Run(ctx, c, stdout, stderr, v, commit)
		}
	case "init":
		var c installer.Init
		if c, err = installer.ParseInit(args, stderr); err == nil {
			err = installer.Run(c.Options, c.Out, stdout)
		}
	case "explain":
		var c settings.Explain
		if c, err = settings.ParseExplain(args, lookup, stderr); err == nil {
			err = explain.Run(ctx, c, stdout)
		}
	case "version":
		fmt.Fprintln(stdout, versionString())
	case "help":
		settings.PrintHelp(stdout)
	default:
		err = fmt.Errorf("unknown command %q (commands: serve, dev, explain, init, version, help)", cmd)
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "nats-k8s-oidc-callout:", err)
		return 1
	}
	return 0
}

// serve runs the sidecar with the real Kubernetes API, JWKS and listener.
func serve(ctx context.Context, args []string, lookup func(string) (string, bool), stdout, stderr io.Writer) error {
	c, err := settings.ParseServe(args, lookup, stderr)
	if err != nil {
		return err
	}
	if c.ShowVersion {
		fmt.Fprintln(stdout, versionString())
		return nil
	}
	level, _ := settings.ParseLevel(c.Log.Level) // validated by ParseServe
	log := logging.New(stderr, level, c.Log.Format)
	logging.RouteKlog(log)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	rc, err := kube.RESTConfig(c.Kube.InCluster, c.Kube.Kubeconfig)
	if err != nil {
		return err
	}
	client, err := metadata.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	if c.Issuer == settings.IssuerAuto {
		if c.Issuer, err = kube.DiscoverIssuer(ctx, rc, log, time.Minute); err != nil {
			return fmt.Errorf("JWT_ISSUER=auto: %w", err)
		}
	}
	jwksURL, httpClient, err := kube.JWKSClient(rc, c.JWKSURL, c.JWKSURLSet, c.Kube.InCluster)
	if err != nil {
		return err
	}
	podStatus, err := kube.NewPodStatusClient(rc)
	if err != nil {
		return err
	}
	v, commit := versionInfo()
	return sidecar.Run(ctx, c, sidecar.Deps{
		Client: client, PodStatus: podStatus, JWKSURL: jwksURL, HTTPClient: httpClient, Log: log, Registry: reg,
		Version: v, Commit: commit,
	})
}
