package callout

// SubjectList is subjectList, for the external benchmarks.
var SubjectList = subjectList
