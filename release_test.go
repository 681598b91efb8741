package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// imageValue is the top-level value the Helm values read the sidecar's image from.
type imageValue struct {
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	Digest     string `json:"digest"`
	PullPolicy string `json:"pullPolicy"`
}

// valuesWithImage are the values files that add the sidecar, each with its calloutImage.
var valuesWithImage = []string{"helm-values/callout-values.yaml", "helm-values/callout-values-operator.yaml"}

var releaseTagRE = regexp.MustCompile(`^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$`)

// makeVar reads `NAME := value` or `NAME ?= value` from the Makefile.
func makeVar(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile("Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + name + `\s*[:?]?=\s*(\S+)\s*$`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("the Makefile does not set %s", name)
	}
	return string(m[1])
}

// TestReleaseVersion keeps the image reference one thing: the Helm values' calloutImage, the
// docs' image references and the Makefile's image repository agree, and the README states the
// Makefile's image size budget. With RELEASE_VERSION set (make check-release-version
// VERSION=vX.Y.Z, the release workflow's first step) they must also name that version, and a
// git tag of that name, if there is one, must be on HEAD, with no uncommitted changes.
func TestReleaseVersion(t *testing.T) {
	release := os.Getenv("RELEASE_VERSION")
	if release != "" && !releaseTagRE.MatchString(release) {
		t.Fatalf("RELEASE_VERSION=%q is not a release tag (vMAJOR.MINOR.PATCH, optionally -PRERELEASE)", release)
	}
	repo := makeVar(t, "IMAGE_REPO")

	t.Run("files", func(t *testing.T) {
		tag := ""
		for _, f := range valuesWithImage {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var v struct {
				CalloutImage *imageValue `json:"calloutImage"`
			}
			if err := yaml.Unmarshal(data, &v); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			img := v.CalloutImage
			switch {
			case img == nil:
				t.Errorf("%s has no calloutImage", f)
				continue
			case img.Repository != repo:
				t.Errorf("%s: calloutImage.repository %q, want the Makefile's IMAGE_REPO %q", f, img.Repository, repo)
			case !releaseTagRE.MatchString(img.Tag):
				t.Errorf("%s: calloutImage.tag %q is not a release tag", f, img.Tag)
			case img.Digest != "" || img.PullPolicy != "IfNotPresent":
				t.Errorf("%s: calloutImage digest %q pullPolicy %q, want none and IfNotPresent", f, img.Digest, img.PullPolicy)
			case tag != "" && img.Tag != tag:
				t.Errorf("%s: calloutImage.tag %s, but %s in %s", f, img.Tag, tag, valuesWithImage[0])
			}
			if tag == "" {
				tag = img.Tag
			}
		}
		if release != "" && tag != release {
			t.Errorf("the Helm values install %s, the release is %s: make set-version VERSION=%s", tag, release, release)
		}

		// Every image reference with a tag in the docs and values names the same one.
		refRE := regexp.MustCompile(regexp.QuoteMeta(repo) + `:([0-9A-Za-z._-]+)`)
		files, _ := filepath.Glob("docs/*.md")
		more, _ := filepath.Glob("helm-values/*")
		files = append(append(files, "README.md"), more...)
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range refRE.FindAllSubmatch(data, -1) {
				if string(m[1]) != tag && releaseTagRE.Match(m[1]) {
					t.Errorf("%s names %s, the values %s:%s", f, m[0], repo, tag)
				}
			}
		}

		// README states the budget make image-check enforces.
		budget, err := strconv.ParseInt(makeVar(t, "IMAGE_SIZE_BUDGET"), 10, 64)
		if err != nil || budget%(1<<20) != 0 {
			t.Fatalf("IMAGE_SIZE_BUDGET %v: want a whole number of MiB", err)
		}
		readme, err := os.ReadFile("README.md")
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("%d MiB", budget>>20)
		found := false
		for _, line := range strings.Split(string(readme), "\n") {
			found = found || (strings.Contains(line, "budget") && strings.Contains(line, want))
		}
		if !found {
			t.Errorf("README.md has no line stating the image size budget, %s (IMAGE_SIZE_BUDGET)", want)
		}
	})

	// A release-time check: with RELEASE_VERSION set, a git tag of that name, if there is one,
	// must be on HEAD with nothing uncommitted (TestCheckReleaseTag covers the check itself).
	if release != "" {
		if os.Getenv("GITHUB_REF_TYPE") == "tag" && os.Getenv("GITHUB_REF_NAME") != release {
			t.Errorf("the workflow runs for tag %s, not %s", os.Getenv("GITHUB_REF_NAME"), release)
		}
		tagged, err := checkReleaseTag(".", release)
		if err != nil {
			t.Error(err)
		} else if !tagged {
			t.Logf("no tag %s yet", release)
		}
	}
}

// checkReleaseTag checks the git checkout in dir for releasing release: a tag of that name, if
// there is one (tagged), is on HEAD, and then no tracked file has uncommitted changes.
func checkReleaseTag(dir, release string) (tagged bool, err error) {
	git := func(args ...string) (string, error) {
		out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).Output()
		return strings.TrimSpace(string(out)), err
	}
	head, err := git("rev-parse", "HEAD")
	if err != nil {
		return false, fmt.Errorf("releasing %s needs a git checkout: %w", release, err)
	}
	onTag, err := git("rev-parse", "-q", "--verify", "refs/tags/"+release+"^{commit}")
	switch {
	case err != nil:
		return false, nil //nolint:nilerr // no such tag yet: nothing to check
	case onTag != head:
		return true, fmt.Errorf("tag %s is on %s, HEAD is %s", release, onTag, head)
	}
	// Releasing this tag: what is built must be what is tagged.
	if _, err := git("diff", "--quiet", "HEAD", "--"); err != nil {
		return true, fmt.Errorf("HEAD is tagged %s but tracked files have uncommitted changes", release)
	}
	return true, nil
}

// TestCheckReleaseTag runs the release-time tag check against a git repository of its own.
func TestCheckReleaseTag(t *testing.T) {
	dir := t.TempDir()
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := checkReleaseTag(dir, "v1.2.3"); err == nil {
		t.Error("a directory that is not a git checkout passed")
	}
	git("init", "-q")
	write("one")
	git("add", "f")
	git("commit", "-q", "-m", "one")
	if tagged, err := checkReleaseTag(dir, "v1.2.3"); tagged || err != nil {
		t.Errorf("no tag yet: tagged %v, %v", tagged, err)
	}
	git("tag", "v1.2.3")
	if tagged, err := checkReleaseTag(dir, "v1.2.3"); !tagged || err != nil {
		t.Errorf("tag on HEAD: tagged %v, %v", tagged, err)
	}
	write("two")
	if _, err := checkReleaseTag(dir, "v1.2.3"); err == nil || !strings.Contains(err.Error(), "uncommitted") {
		t.Errorf("uncommitted change on the tagged HEAD: %v", err)
	}
	git("commit", "-q", "-am", "two")
	if _, err := checkReleaseTag(dir, "v1.2.3"); err == nil || !strings.Contains(err.Error(), "is on") {
		t.Errorf("tag behind HEAD: %v", err)
	}
}
