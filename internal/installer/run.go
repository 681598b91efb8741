package installer

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Run is the init command: it generates the keys and writes the Secret manifest, the matching
// nats-server configuration and Helm values into dir, then prints the next steps. An existing
// Secret in dir is kept unless opts asks for an issuer rotation.
func Run(opts InstallOptions, dir string, stdout io.Writer) error {
	existing, err := os.ReadFile(filepath.Join(dir, InstallSecretFile))
	switch {
	case err == nil:
		opts.ExistingSecret = existing
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("init: %w", err)
	}
	files, err := GenerateInstall(opts)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if err := files.WriteDir(dir); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	fmt.Fprint(stdout, files.NextSteps(dir))
	return nil
}
