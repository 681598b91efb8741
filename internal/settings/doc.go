// Package settings is the one table of the service's settings: each declared once with its
// environment variable, flag, default, help and validation, and read by serve, explain and dev
// alike (and, through the same Table type, by init). It also holds the subcommand list and the
// top-level help.
package settings
