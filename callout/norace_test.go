//go:build !race

package callout_test

// raceDetector is true in builds with -race.
const raceDetector = false
