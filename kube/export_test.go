package kube

// MaxTokenBytes is the longest token Verify parses, for the external tests.
const MaxTokenBytes = maxTokenBytes
