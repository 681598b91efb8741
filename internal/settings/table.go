package settings

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Setting is one configuration value: where it comes from (an environment variable, a flag,
// or both), its default, its help text, and how its text becomes a typed value.
type Setting struct {
	// Env is the environment variable, "" for a flag-only setting.
	Env string
	// Flag is the flag name without dashes: the lower-case, kebab-case form of Env.
	Flag string
	// Aliases are older flag names that keep working.
	Aliases []string
	// Default is the value used when neither the flag nor the environment gives one.
	Default string
	// DefaultDoc, if set, describes the default where Default alone would mislead.
	DefaultDoc string
	// Help says what the setting does, in a line for --help.
	Help string
	// Doc, if set, says it at more length (Markdown) for the configuration page.
	Doc string
	// Optional means the empty value is meaningful (the feature is off); for any other
	// setting an environment variable that is set but empty is an error.
	Optional bool
	// Kind is "string", "bool", "int" or "duration", for help and documentation.
	Kind string

	parse func(string) error
	// repeat, for a repeatable flag, takes each occurrence as it is given.
	repeat func(string) error
}

// name is how errors refer to the setting: its environment variable, else its flag.
func (s *Setting) name() string {
	if s.Env != "" {
		return s.Env
	}
	return "--" + s.Flag
}

// String binds a text setting to p.
func String(p *string, env, flagName, def, help string) *Setting {
	return &Setting{Env: env, Flag: flagName, Default: def, Help: help, Kind: "string",
		parse: func(v string) error { *p = v; return nil }}
}

// Bool binds a boolean setting (true/false, 1/0) to p.
func Bool(p *bool, env, flagName string, def bool, help string) *Setting {
	return &Setting{Env: env, Flag: flagName, Default: strconv.FormatBool(def), Help: help, Kind: "bool",
		parse: func(v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%q is not a boolean (use true or false)", v)
			}
			*p = b
			return nil
		}}
}

// Int binds an integer setting to p.
func Int(p *int, env, flagName string, def int, help string) *Setting {
	return &Setting{Env: env, Flag: flagName, Default: strconv.Itoa(def), Help: help, Kind: "int",
		parse: func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%q is not an integer", v)
			}
			*p = n
			return nil
		}}
}

// Duration binds a duration setting (90s, 1h) to p.
func Duration(p *time.Duration, env, flagName string, def time.Duration, help string) *Setting {
	// 1h rather than 1h0m0s.
	text := def.String()
	if strings.HasSuffix(text, "m0s") {
		text = strings.TrimSuffix(text, "0s")
	}
	if strings.HasSuffix(text, "h0m") {
		text = strings.TrimSuffix(text, "0m")
	}
	return &Setting{Env: env, Flag: flagName, Default: text, Help: help, Kind: "duration",
		parse: func(v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("%q is not a duration (e.g. 90s, 1h)", v)
			}
			*p = d
			return nil
		}}
}

// Func is a flag-only text setting whose value goes to set (called with "" when not given).
func Func(flagName, help string, set func(string) error) *Setting {
	return &Setting{Flag: flagName, Help: help, Kind: "string", Optional: true, parse: set}
}

// Repeated is a flag-only setting that may be given several times; each value goes to add.
func Repeated(flagName, help string, add func(string) error) *Setting {
	return &Setting{Flag: flagName, Help: help + " (repeatable)", Kind: "string", Optional: true,
		parse: func(string) error { return nil }, repeat: add}
}

// optional marks s as one whose empty value means "off".
func (s *Setting) optional() *Setting { s.Optional = true; return s }

// alias adds older flag names.
func (s *Setting) alias(names ...string) *Setting { s.Aliases = append(s.Aliases, names...); return s }

// doc sets the longer description of the configuration page.
func (s *Setting) doc(d string) *Setting { s.Doc = d; return s }

// defaultDoc documents a default that Default alone would misstate.
func (s *Setting) defaultDoc(doc string) *Setting { s.DefaultDoc = doc; return s }

// Table is the settings of one subcommand.
type Table struct {
	// Command is the subcommand, e.g. "serve".
	Command string
	// Usage is printed above the flags by --help.
	Usage    string
	Settings []*Setting
	// NoEnv makes the table read flags only (dev mode behaves the same on every machine).
	NoEnv bool
}

// Parsed says which settings the flags or the environment set explicitly.
type Parsed struct {
	set  map[string]bool
	args []string
}

// IsSet reports whether the setting with this flag name was given (flag or environment).
func (p Parsed) IsSet(flagName string) bool { return p.set[flagName] }

// Args are the arguments left after the flags.
func (p Parsed) Args() []string { return p.args }

// rawValue collects a flag's text; parsing waits until every source is known, so a flag can
// override a malformed environment value.
type rawValue struct {
	v       string
	set     bool
	boolean bool
	repeat  func(string) error
}

func (r *rawValue) String() string { return r.v }
func (r *rawValue) Set(v string) error {
	r.v, r.set = v, true
	if r.repeat != nil {
		return r.repeat(v)
	}
	return nil
}
func (r *rawValue) IsBoolFlag() bool { return r.boolean }

// Parse fills the bound values: a flag wins over the environment, the environment over the
// default. Errors name the setting. lookup reads the environment (os.LookupEnv).
func (t Table) Parse(args []string, lookup func(string) (string, bool), output io.Writer) (Parsed, error) {
	fs := flag.NewFlagSet("nats-k8s-oidc-callout "+t.Command, flag.ContinueOnError)
	fs.SetOutput(output)
	fs.Usage = func() { t.PrintUsage(output) }
	raws := make([]*rawValue, len(t.Settings))
	for i, s := range t.Settings {
		raws[i] = &rawValue{v: s.Default, boolean: s.Kind == "bool", repeat: s.repeat}
		for _, n := range append([]string{s.Flag}, s.Aliases...) {
			fs.Var(raws[i], n, s.Help)
		}
	}
	if err := fs.Parse(args); err != nil {
		return Parsed{}, err
	}
	p := Parsed{set: map[string]bool{}, args: fs.Args()}
	var errs []error
	for i, s := range t.Settings {
		v, source := raws[i].v, s.name()
		if raws[i].set {
			p.set[s.Flag] = true
			source = "--" + s.Flag
		} else if env, ok := t.env(s, lookup); ok {
			if env == "" && !s.Optional {
				errs = append(errs, fmt.Errorf("%s is set but empty: give it a value or unset it (default %s)", s.Env, s.defaultText()))
				continue
			}
			v = env
			p.set[s.Flag] = env != ""
		}
		if err := s.parse(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", source, err))
		}
	}
	return p, errors.Join(errs...)
}

// ParseNoArgs is Parse for a command that takes no arguments besides its flags.
func (t Table) ParseNoArgs(args []string, lookup func(string) (string, bool), output io.Writer) (Parsed, error) {
	p, err := t.Parse(args, lookup, output)
	if err == nil && len(p.args) > 0 {
		err = fmt.Errorf("unexpected arguments: %v", p.args)
	}
	return p, err
}

func (t Table) env(s *Setting, lookup func(string) (string, bool)) (string, bool) {
	if t.NoEnv || s.Env == "" || lookup == nil {
		return "", false
	}
	return lookup(s.Env)
}

func (s *Setting) defaultText() string {
	switch {
	case s.DefaultDoc != "":
		return s.DefaultDoc
	case s.Default == "":
		return "none"
	}
	return s.Default
}

// PrintUsage writes the usage line and one entry per setting.
func (t Table) PrintUsage(w io.Writer) {
	fmt.Fprint(w, t.Usage)
	for _, s := range t.Settings {
		names := "--" + s.Flag
		for _, a := range s.Aliases {
			names += ", --" + a
		}
		if s.Kind != "bool" {
			names += " " + s.Kind
		}
		fmt.Fprintf(w, "  %s\n    \t%s", names, s.Help)
		if s.Env != "" && !t.NoEnv {
			fmt.Fprintf(w, " (env %s)", s.Env)
		}
		if d := s.defaultText(); d != "none" {
			fmt.Fprintf(w, " (default %s)", d)
		}
		fmt.Fprintln(w)
	}
}

// Markdown renders the table's environment settings as a Markdown table, for the docs.
func (t Table) Markdown() string {
	var b strings.Builder
	b.WriteString("| Variable | Flag | Default | Meaning |\n| --- | --- | --- | --- |\n")
	for _, s := range t.Settings {
		if s.Env == "" {
			continue
		}
		flags := "`--" + s.Flag + "`"
		for _, a := range s.Aliases {
			flags += ", `--" + a + "`"
		}
		def := s.DefaultDoc
		if def == "" && s.Default != "" {
			def = "`" + s.Default + "`"
		}
		text := s.Doc
		if text == "" {
			text = s.Help
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", s.Env, flags, def, strings.ReplaceAll(text, "|", `\|`))
	}
	return b.String()
}

// Lookup returns the setting with this environment variable, or nil.
func (t Table) Lookup(env string) *Setting {
	i := slices.IndexFunc(t.Settings, func(s *Setting) bool { return s.Env == env })
	if i < 0 {
		return nil
	}
	return t.Settings[i]
}
