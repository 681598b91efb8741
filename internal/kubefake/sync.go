package kubefake

import (
	"context"
	"fmt"
	"maps"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// ManagedByLabel is set by SyncServiceAccounts on the ServiceAccounts it creates, with the value
// ManagedBy; it deletes only ServiceAccounts that carry it.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedBy      = "nats-k8s-oidc-callout-dev"
)

// SyncResult is what SyncServiceAccounts did.
type SyncResult struct {
	// ServiceAccounts are the wanted ServiceAccounts as stored, in the order given, each with
	// its uid.
	ServiceAccounts []kube.ServiceAccount
	// Created, Updated and Deleted count the changes; a ServiceAccount recreated because its
	// uid changed counts as deleted and created.
	Created, Updated, Deleted int
}

// SyncServiceAccounts makes the ServiceAccounts in the cluster that carry ManagedByLabel exactly
// want, so that informers (and so a kube.Store) see every change as they would in a real
// cluster. It creates the missing ones (labelled, with a fresh uid unless want gives one),
// updates the labels and annotations of changed ones keeping their uid, recreates one whose
// wanted uid differs from the stored one (as a deleted and recreated ServiceAccount: tokens for
// the old uid stop working), and deletes labelled ones that are no longer wanted.
//
// It never modifies or deletes a ServiceAccount it did not create: a wanted name already taken
// by one is an error.
func SyncServiceAccounts(ctx context.Context, cluster *MemoryCluster, want []kube.ServiceAccount) (SyncResult, error) {
	var res SyncResult
	existing, err := cluster.List(ctx, metav1.NamespaceAll, ManagedByLabel+"="+ManagedBy)
	if err != nil {
		return res, err
	}
	current := make(map[string]kube.ServiceAccount, len(existing))
	for _, sa := range existing {
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
			if err := cluster.Delete(ctx, cur.Namespace, cur.Name); err != nil && !apierrors.IsNotFound(err) {
				return res, fmt.Errorf("recreate serviceaccount %s with uid %s: %w", key, w.UID, err)
			}
			res.Deleted++
			ok = false
		}
		switch {
		case !ok:
			sa := &kube.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
				Namespace: w.Namespace, Name: w.Name, UID: w.UID, Labels: labels, Annotations: maps.Clone(w.Annotations),
			}}
			created, err := cluster.Create(ctx, sa)
			if apierrors.IsAlreadyExists(err) {
				return res, fmt.Errorf("serviceaccount %s exists and was not created by this sync, so it is left alone: %w", key, err)
			}
			if err != nil {
				return res, err
			}
			res.Created++
			res.ServiceAccounts = append(res.ServiceAccounts, *created)
		case !maps.Equal(cur.Labels, labels) || !maps.Equal(cur.Annotations, w.Annotations):
			sa := cur.DeepCopy()
			sa.Labels, sa.Annotations = labels, maps.Clone(w.Annotations)
			updated, err := cluster.Update(ctx, sa)
			if err != nil {
				return res, err
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
		if err := cluster.Delete(ctx, cur.Namespace, cur.Name); err != nil && !apierrors.IsNotFound(err) {
			return res, err
		}
		res.Deleted++
	}
	return res, nil
}
