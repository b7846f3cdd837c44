//go:build raftorstages

package actors

// stagesOn: this build marks the stages of a write (see stages.go).
const stagesOn = true
