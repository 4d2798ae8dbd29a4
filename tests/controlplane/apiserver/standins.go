package main

// Stand-in CRDs for built-in kinds.
//
// The CRD API refuses the core group "" and groups without a dot such as
// "batch", so these CRDs are written straight into etcd, already accepted and
// established, before the server starts. The CRD informer then picks them up
// like any other CRD.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	apiextensionsinternal "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	"k8s.io/apiextensions-apiserver/pkg/apiserver"
	"k8s.io/apiextensions-apiserver/pkg/cmd/server/options"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// standinAnnotation marks the CRDs of built-in kinds.
const standinAnnotation = "controlplane.tablerefresh.dev/stand-in"

func standinKey(prefix, name string) string {
	return path.Join("/", prefix, "apiextensions.k8s.io", "customresourcedefinitions", name)
}

func writeStandins(ctx context.Context, o *options.CustomResourceDefinitionsServerOptions, file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var list struct {
		Items []apiextensionsv1.CustomResourceDefinition `json:"items"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}

	storage := o.RecommendedOptions.Etcd.StorageConfig
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   storage.Transport.ServerList,
		DialTimeout: 20 * time.Second,
		Context:     ctx,
	})
	if err != nil {
		return err
	}
	defer cli.Close()

	now := metav1.NewTime(time.Now().UTC().Truncate(time.Second))
	for i := range list.Items {
		crd := &list.Items[i]
		if crd.Name == "" {
			crd.Name = crd.Spec.Names.Plural + "." + crd.Spec.Group
		}
		if crd.Annotations == nil {
			crd.Annotations = map[string]string{}
		}
		crd.Annotations[standinAnnotation] = "true"
		acceptStandin(crd, now)
		checkStandin(crd)

		key := standinKey(storage.Prefix, crd.Name)
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		resp, err := cli.Get(wctx, key)
		cancel()
		if err != nil {
			return fmt.Errorf("reading %s: %w", key, err)
		}
		crd.UID = types.UID(fmt.Sprintf("%x", sha256.Sum256([]byte("stand-in/"+crd.Name)))[:32])
		crd.UID = types.UID(string(crd.UID[0:8]) + "-" + string(crd.UID[8:12]) + "-" + string(crd.UID[12:16]) + "-" + string(crd.UID[16:20]) + "-" + string(crd.UID[20:32]))
		crd.CreationTimestamp = now
		if len(resp.Kvs) == 1 {
			var old apiextensionsv1.CustomResourceDefinition
			if err := json.Unmarshal(resp.Kvs[0].Value, &old); err == nil {
				if equality.Semantic.DeepEqual(old.Spec, crd.Spec) && equality.Semantic.DeepEqual(old.Annotations, crd.Annotations) {
					continue
				}
				crd.CreationTimestamp = old.CreationTimestamp
			}
		}
		acceptStandin(crd, now)
		crd.APIVersion = "apiextensions.k8s.io/v1"
		crd.Kind = "CustomResourceDefinition"
		crd.ResourceVersion = ""
		value, err := json.Marshal(crd)
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 1 && bytes.Equal(resp.Kvs[0].Value, value) {
			continue
		}
		wctx, cancel = context.WithTimeout(ctx, 20*time.Second)
		_, err = cli.Put(wctx, key, string(value))
		cancel()
		if err != nil {
			return fmt.Errorf("writing %s: %w", key, err)
		}
		klog.V(2).Infof("wrote stand-in CRD %s (%d bytes)", crd.Name, len(value))
	}
	return nil
}

// acceptStandin fills in the status the naming and establishing controllers
// would have written. The conditions are dated an hour back: the CRD handler
// holds every create for 2 s while a CRD is less than 2 s established.
func acceptStandin(crd *apiextensionsv1.CustomResourceDefinition, now metav1.Time) {
	now = metav1.NewTime(now.Add(-time.Hour))
	crd.Status.AcceptedNames = crd.Spec.Names
	if crd.Status.AcceptedNames.Singular == "" {
		crd.Status.AcceptedNames.Singular = strings.ToLower(crd.Spec.Names.Kind)
	}
	if crd.Status.AcceptedNames.ListKind == "" {
		crd.Status.AcceptedNames.ListKind = crd.Spec.Names.Kind + "List"
	}
	crd.Status.StoredVersions = nil
	for _, v := range crd.Spec.Versions {
		if v.Storage {
			crd.Status.StoredVersions = append(crd.Status.StoredVersions, v.Name)
		}
	}
	crd.Status.Conditions = []apiextensionsv1.CustomResourceDefinitionCondition{
		{
			Type:               apiextensionsv1.NamesAccepted,
			Status:             apiextensionsv1.ConditionTrue,
			Reason:             "NoConflicts",
			Message:            "no conflicts found",
			LastTransitionTime: now,
		},
		{
			Type:               apiextensionsv1.Established,
			Status:             apiextensionsv1.ConditionTrue,
			Reason:             "InitialNamesAccepted",
			Message:            "the initial names have been accepted",
			LastTransitionTime: now,
		},
	}
	if crd.Annotations[apiextensionsv1.KubeAPIApprovedAnnotation] != "" {
		crd.Status.Conditions = append(crd.Status.Conditions, apiextensionsv1.CustomResourceDefinitionCondition{
			Type:               apiextensionsv1.KubernetesAPIApprovalPolicyConformant,
			Status:             apiextensionsv1.ConditionTrue,
			Reason:             "ApprovedAnnotation",
			Message:            "approved in " + crd.Annotations[apiextensionsv1.KubeAPIApprovedAnnotation],
			LastTransitionTime: now,
		})
	}
}

// checkStandin runs the CRD API's own validation and logs what it finds,
// except the complaints about the group and name that are the reason these
// CRDs go straight into etcd.
func checkStandin(crd *apiextensionsv1.CustomResourceDefinition) {
	internal := &apiextensionsinternal.CustomResourceDefinition{}
	if err := apiserver.Scheme.Convert(crd, internal, nil); err != nil {
		klog.Warningf("stand-in %s: cannot convert: %v", crd.Name, err)
		return
	}
	for _, e := range validation.ValidateCustomResourceDefinition(context.Background(), internal) {
		switch e.Field {
		case "metadata.name", "spec.group":
			continue
		}
		klog.Warningf("stand-in %s: %v", crd.Name, e)
	}
}
