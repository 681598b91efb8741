package kube

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// ManagedByLabel is set by SyncServiceAccounts on the ServiceAccounts it creates, with the value
// ManagedBy; it deletes only ServiceAccounts that carry it.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedBy      = "nats-k8s-oidc-callout-dev"
)

// maxManifestBytes bounds a manifest; a few hundred ServiceAccounts fit in well under 1 MiB.
const maxManifestBytes = 4 << 20

// ParseServiceAccounts reads ServiceAccounts from a manifest as `kubectl apply -f` takes it: YAML
// documents separated by "---" (or JSON), each a v1 ServiceAccount or a List of them (the output
// of `kubectl get serviceaccounts -o yaml`). A ServiceAccount without a namespace is in
// "default". Only the name, namespace, uid, labels and annotations are kept.
//
// Unknown fields are errors, so a misspelt "annotations:" is reported rather than silently
// granting nothing; so are invalid names and a ServiceAccount listed twice. Empty documents are
// skipped and an empty manifest gives no ServiceAccounts.
func ParseServiceAccounts(data []byte) ([]corev1.ServiceAccount, error) {
	if len(data) > maxManifestBytes {
		return nil, fmt.Errorf("manifest is %d bytes, limit %d", len(data), maxManifestBytes)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []corev1.ServiceAccount
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
func decodeServiceAccounts(raw []byte) ([]corev1.ServiceAccount, error) {
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
		var sa corev1.ServiceAccount
		if err := yaml.UnmarshalStrict(raw, &sa); err != nil {
			return nil, err
		}
		return []corev1.ServiceAccount{normalize(sa)}, nil
	case (tm.Kind == "List" || tm.Kind == "ServiceAccountList") && tm.APIVersion == "v1":
		var list struct {
			metav1.TypeMeta `json:",inline"`
			metav1.ListMeta `json:"metadata"`
			Items           []corev1.ServiceAccount `json:"items"`
		}
		if err := yaml.UnmarshalStrict(raw, &list); err != nil {
			return nil, err
		}
		out := make([]corev1.ServiceAccount, 0, len(list.Items))
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

// normalize keeps what the store reads and what identifies the object.
func normalize(sa corev1.ServiceAccount) corev1.ServiceAccount {
	ns := sa.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	return corev1.ServiceAccount{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: sa.Name, UID: sa.UID,
			Labels: sa.Labels, Annotations: sa.Annotations,
		},
	}
}

func validateServiceAccount(sa corev1.ServiceAccount) error {
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

// SyncResult is what SyncServiceAccounts did.
type SyncResult struct {
	// ServiceAccounts are the wanted ServiceAccounts as stored, in the order given, each with
	// its uid.
	ServiceAccounts []corev1.ServiceAccount
	// Created, Updated and Deleted count the changes; a ServiceAccount recreated because its
	// uid changed counts as deleted and created.
	Created, Updated, Deleted int
}

// SyncServiceAccounts makes the ServiceAccounts in client that carry ManagedByLabel exactly want,
// so that informers (and so a Store) see every change as they would in a cluster. It creates the
// missing ones (labelled, with a fresh uid unless want gives one), updates the labels and
// annotations of changed ones keeping their uid, recreates one whose wanted uid differs from the
// stored one (as a deleted and recreated ServiceAccount: tokens for the old uid stop working), and
// deletes labelled ones that are no longer wanted.
//
// It is meant for a fake clientset (dev mode and tests). It never modifies or deletes a
// ServiceAccount it did not create: a wanted name already taken by one is an error.
func SyncServiceAccounts(ctx context.Context, client kubernetes.Interface, want []corev1.ServiceAccount) (SyncResult, error) {
	var res SyncResult
	api := client.CoreV1()
	existing, err := api.ServiceAccounts(metav1.NamespaceAll).List(ctx, metav1.ListOptions{LabelSelector: ManagedByLabel + "=" + ManagedBy})
	if err != nil {
		return res, fmt.Errorf("list serviceaccounts: %w", err)
	}
	current := make(map[string]corev1.ServiceAccount, len(existing.Items))
	for _, sa := range existing.Items {
		current[sa.Namespace+"/"+sa.Name] = sa
	}
	wanted := make(map[string]bool, len(want))
	for _, w := range want {
		key := w.Namespace + "/" + w.Name
		wanted[key] = true
		labels := maps.Clone(w.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		labels[ManagedByLabel] = ManagedBy
		cur, ok := current[key]
		if ok && w.UID != "" && w.UID != cur.UID {
			if err := api.ServiceAccounts(cur.Namespace).Delete(ctx, cur.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return res, fmt.Errorf("recreate serviceaccount %s with uid %s: %w", key, w.UID, err)
			}
			res.Deleted++
			ok = false
		}
		switch {
		case !ok:
			sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
				Namespace: w.Namespace, Name: w.Name, UID: w.UID, Labels: labels, Annotations: maps.Clone(w.Annotations),
			}}
			if sa.UID == "" {
				sa.UID = uuid.NewUUID()
			}
			created, err := api.ServiceAccounts(w.Namespace).Create(ctx, sa, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return res, fmt.Errorf("create serviceaccount %s: it exists and was not created by this sync, so it is left alone: %w", key, err)
			}
			if err != nil {
				return res, fmt.Errorf("create serviceaccount %s: %w", key, err)
			}
			res.Created++
			res.ServiceAccounts = append(res.ServiceAccounts, *created)
		case !maps.Equal(cur.Labels, labels) || !maps.Equal(cur.Annotations, w.Annotations):
			sa := cur.DeepCopy()
			sa.Labels, sa.Annotations = labels, maps.Clone(w.Annotations)
			updated, err := api.ServiceAccounts(w.Namespace).Update(ctx, sa, metav1.UpdateOptions{})
			if err != nil {
				return res, fmt.Errorf("update serviceaccount %s: %w", key, err)
			}
			res.Updated++
			res.ServiceAccounts = append(res.ServiceAccounts, *updated)
		default:
			res.ServiceAccounts = append(res.ServiceAccounts, cur)
		}
	}
	for key, cur := range current {
		if wanted[key] {
			continue
		}
		if err := api.ServiceAccounts(cur.Namespace).Delete(ctx, cur.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return res, fmt.Errorf("delete serviceaccount %s: %w", key, err)
		}
		res.Deleted++
	}
	return res, nil
}
