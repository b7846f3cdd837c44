//go:build !raftorstages

package actors

// stagesOn: this build leaves out the stage marks (see stages.go).
const stagesOn = false
