// Command release-tool builds, checks and pushes the service's container image without a
// container engine. The Makefile runs it (make image, image-check, image-push, image-load);
// docs/release.md describes the image.
//
//	release-tool build  -out DIR -binary linux/amd64=FILE -binary linux/arm64=FILE -version V -revision SHA ...
//	release-tool check  -layout DIR -version V -commit C -revision SHA -budget BYTES [-binary P=FILE ...]
//	release-tool push   -layout DIR IMAGE
//	release-tool docker-tar -layout DIR -platform linux/amd64 -tag IMAGE -out FILE
//
// The image is built FROM nothing: a base layer with /etc/passwd and /etc/group (root, nobody
// and nonroot 65532), the CA certificates and empty /tmp and /home/nonroot, then a layer with
// the static binary as the entrypoint, run as 65532:65532. No shell, no package manager, no
// other executable. The layout under DIR is an OCI image layout whose index.json names one
// multi-platform image index (annotated with org.opencontainers.image.ref.name = version).
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "build":
		err = runBuild(args)
	case "check":
		err = runCheck(args)
	case "push":
		err = runPush(args)
	case "docker-tar":
		err = runDockerTar(args)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "release-tool:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: release-tool build|check|push|docker-tar [flags] (see -h of each)")
	os.Exit(2)
}

// binaries is a repeatable -binary os/arch=FILE flag.
type binaries map[string]string

func (b binaries) String() string {
	var s []string
	for k, v := range b {
		s = append(s, k+"="+v)
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

func (b binaries) Set(v string) error {
	platform, file, ok := strings.Cut(v, "=")
	if !ok || file == "" {
		return fmt.Errorf("want os/arch=FILE, got %q", v)
	}
	if _, err := parsePlatform(platform); err != nil {
		return err
	}
	b[platform] = file
	return nil
}

// platforms returns the keys in a fixed order.
func (b binaries) platforms() []string {
	var p []string
	for k := range b {
		p = append(p, k)
	}
	sort.Strings(p)
	return p
}

func parseFlags(fs *flag.FlagSet, args []string, required ...string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, name := range required {
		if f := fs.Lookup(name); f == nil || f.Value.String() == "" || f.Value.String() == "0" {
			return fmt.Errorf("%s: -%s is required", fs.Name(), name)
		}
	}
	return nil
}
