package kube

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// maxManifestBytes bounds a manifest; a few hundred ServiceAccounts fit in well under 1 MiB.
const maxManifestBytes = 4 << 20

// ParseServiceAccounts reads ServiceAccounts from a manifest as `kubectl apply -f` takes it: YAML
// documents separated by "---" (or JSON), each a v1 ServiceAccount or a List of them (the output
// of `kubectl get serviceaccounts -o yaml`). A ServiceAccount without a namespace is in
// "default". Only the name, namespace, uid, labels and annotations are kept; the other fields of
// a v1 ServiceAccount (secrets, imagePullSecrets, automountServiceAccountToken) are accepted and
// dropped.
//
// Unknown fields are errors, so a misspelt "annotations:" is reported rather than silently
// granting nothing; so are invalid names and a ServiceAccount listed twice. Empty documents are
// skipped and an empty manifest gives no ServiceAccounts.
func ParseServiceAccounts(data []byte) ([]ServiceAccount, error) {
	if len(data) > maxManifestBytes {
		return nil, fmt.Errorf("manifest is %d bytes, limit %d", len(data), maxManifestBytes)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []ServiceAccount
	seen := map[string]int{}
	for doc := 1; ; doc++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		sas, err := decodeServiceAccounts(raw)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		for _, sa := range sas {
			key := sa.Namespace + "/" + sa.Name
			if err := validateServiceAccount(sa); err != nil {
				return nil, fmt.Errorf("document %d: serviceaccount %s: %w", doc, key, err)
			}
			if first, dup := seen[key]; dup {
				return nil, fmt.Errorf("document %d: serviceaccount %s is already defined in document %d", doc, key, first)
			}
			seen[key] = doc
			out = append(out, sa)
		}
	}
}

// decodeServiceAccounts decodes one document: nothing, a ServiceAccount or a List of them.
func decodeServiceAccounts(raw []byte) ([]ServiceAccount, error) {
	var probe any
	if err := yaml.Unmarshal(raw, &probe); err != nil {
		return nil, err
	}
	if probe == nil { // only comments or whitespace
		return nil, nil
	}
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(raw, &tm); err != nil {
		return nil, err
	}
	switch {
	case tm.Kind == "ServiceAccount" && tm.APIVersion == "v1":
		var sa manifestServiceAccount
		if err := yaml.UnmarshalStrict(raw, &sa); err != nil {
			return nil, err
		}
		return []ServiceAccount{normalize(sa)}, nil
	case (tm.Kind == "List" || tm.Kind == "ServiceAccountList") && tm.APIVersion == "v1":
		var list struct {
			metav1.TypeMeta `json:",inline"`
			metav1.ListMeta `json:"metadata"`
			Items           []manifestServiceAccount `json:"items"`
		}
		if err := yaml.UnmarshalStrict(raw, &list); err != nil {
			return nil, err
		}
		out := make([]ServiceAccount, 0, len(list.Items))
		for i, sa := range list.Items {
			if sa.Kind != "" && (sa.Kind != "ServiceAccount" || sa.APIVersion != "v1") {
				return nil, fmt.Errorf("item %d is %s %s; only v1 ServiceAccounts are read", i, sa.APIVersion, sa.Kind)
			}
			out = append(out, normalize(sa))
		}
		return out, nil
	case tm.Kind == "":
		return nil, errors.New("no kind: want apiVersion: v1 and kind: ServiceAccount")
	default:
		return nil, fmt.Errorf("%s %s: only v1 ServiceAccounts are read", tm.APIVersion, tm.Kind)
	}
}

// manifestServiceAccount is a v1 ServiceAccount as written in a manifest: every field of the
// API's type, so that strict decoding accepts what kubectl accepts and rejects misspellings.
type manifestServiceAccount struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Secrets           []struct {
		Kind            string `json:"kind,omitempty"`
		Namespace       string `json:"namespace,omitempty"`
		Name            string `json:"name,omitempty"`
		UID             string `json:"uid,omitempty"`
		APIVersion      string `json:"apiVersion,omitempty"`
		ResourceVersion string `json:"resourceVersion,omitempty"`
		FieldPath       string `json:"fieldPath,omitempty"`
	} `json:"secrets,omitempty"`
	ImagePullSecrets []struct {
		Name string `json:"name,omitempty"`
	} `json:"imagePullSecrets,omitempty"`
	AutomountServiceAccountToken *bool `json:"automountServiceAccountToken,omitempty"`
}

// normalize keeps what the store reads and what identifies the object.
func normalize(sa manifestServiceAccount) ServiceAccount {
	ns := sa.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	return ServiceAccount{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: sa.Name, UID: sa.UID,
			Labels: sa.Labels, Annotations: sa.Annotations,
		},
	}
}

func validateServiceAccount(sa ServiceAccount) error {
	if sa.Name == "" {
		return errors.New("metadata.name is required")
	}
	if errs := validation.IsDNS1123Subdomain(sa.Name); len(errs) > 0 {
		return fmt.Errorf("name: %s", strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Label(sa.Namespace); len(errs) > 0 {
		return fmt.Errorf("namespace: %s", strings.Join(errs, "; "))
	}
	return nil
}
