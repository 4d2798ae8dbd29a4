package main

// The shim sits innermost in the handler chain (after authentication,
// authorization and request-info parsing) and adds what a standalone
// apiextensions-apiserver lacks:
//
//   - /api, /api/v1 and /apis discovery built from the CRDs;
//   - routing of /api/v1/... requests for the core stand-ins to the CRD
//     handler (which is only mounted under /apis/);
//   - for stand-ins only: strategic-merge-patch done here, against the typed
//     Go struct, and sent on as a JSON merge patch with a resourceVersion
//     precondition; protobuf request bodies decoded and sent on as JSON;
//     Secret stringData folded into data, as the real server does;
//   - a minimal namespace "controller": deleting a Namespace deletes the
//     namespaced objects in it.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"

	apiextensionshelpers "k8s.io/apiextensions-apiserver/pkg/apihelpers"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apiserver"
	listers "k8s.io/apiextensions-apiserver/pkg/client/listers/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apiserver/pkg/endpoints/discovery"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/kube-openapi/pkg/handler3"
	"k8s.io/apiserver/pkg/endpoints/handlers/responsewriters"
	apirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2"
)

type shim struct {
	next      http.Handler
	crdLister listers.CustomResourceDefinitionLister
	dyn       dynamic.Interface
	generic   *genericapiserver.GenericAPIServer
}

func (s *shim) wrap(next http.Handler) http.Handler {
	s.next = next
	return s
}

func (s *shim) init(server *apiserver.CustomResourceDefinitions) error {
	s.crdLister = server.Informers.Apiextensions().V1().CustomResourceDefinitions().Lister()
	s.generic = server.GenericAPIServer
	dyn, err := dynamic.NewForConfig(server.GenericAPIServer.LoopbackClientConfig)
	if err != nil {
		return err
	}
	s.dyn = dyn
	return nil
}

func (s *shim) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if s.crdLister == nil {
		s.next.ServeHTTP(w, req)
		return
	}
	if req.Method == http.MethodGet {
		switch strings.TrimSuffix(req.URL.Path, "/") {
		case "/api":
			s.serveAPIVersions(w, req)
			return
		case "/api/v1":
			s.serveCoreResources(w, req)
			return
		case "/apis":
			s.serveGroups(w, req)
			return
		case "/openapi/v3":
			s.serveOpenAPIV3Index(w, req)
			return
		case "/openapi/v3/api/v1":
			s.serveOpenAPIV3Core(w, req)
			return
		}
	}

	info, ok := apirequest.RequestInfoFrom(req.Context())
	if !ok || !info.IsResourceRequest {
		s.next.ServeHTTP(w, req)
		return
	}
	if info.APIGroup == "" && info.Resource == "namespaces" && info.Namespace != "" {
		// /api/v1/namespaces/NAME parses as "in namespace NAME"; Namespace
		// is cluster-scoped, and the CRD handler would answer 404.
		fixed := *info
		fixed.Namespace = ""
		info = &fixed
		req = req.WithContext(apirequest.WithRequestInfo(req.Context(), info))
	}
	crd := s.standin(info)
	if crd != nil {
		switch req.Method {
		case http.MethodPost, http.MethodPut:
			if err := s.fixBody(req, info, crd); err != nil {
				s.writeError(w, req, info, apierrors.NewBadRequest(err.Error()))
				return
			}
		case http.MethodPatch:
			if mediaType(req.Header.Get("Content-Type")) == string(types.StrategicMergePatchType) {
				s.strategicMergePatch(w, req, info, crd)
				return
			}
		case http.MethodDelete:
			if info.APIGroup == "" && info.Resource == "namespaces" && info.Subresource == "" && info.Name != "" {
				rec := &statusRecorder{ResponseWriter: w}
				s.dispatch(rec, req, info)
				if rec.status < 300 {
					go s.cleanupNamespace(info.Name)
				}
				return
			}
		}
	}
	s.dispatch(w, req, info)
}

// dispatch sends a request on; /api/v1/... resource requests go to the CRD
// handler mounted under /apis/ (it routes by the RequestInfo, which still
// says group "").
func (s *shim) dispatch(w http.ResponseWriter, req *http.Request, info *apirequest.RequestInfo) {
	if info.APIPrefix == "api" && strings.HasPrefix(req.URL.Path, "/api/") {
		req.URL.Path = "/apis/" + strings.TrimPrefix(req.URL.Path, "/api/")
		req.URL.RawPath = ""
	}
	s.next.ServeHTTP(w, req)
}

func (s *shim) standin(info *apirequest.RequestInfo) *apiextensionsv1.CustomResourceDefinition {
	crd, err := s.crdLister.Get(info.Resource + "." + info.APIGroup)
	if err != nil || crd.Annotations[standinAnnotation] == "" {
		return nil
	}
	return crd
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func mediaType(contentType string) string {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

func (s *shim) writeError(w http.ResponseWriter, req *http.Request, info *apirequest.RequestInfo, err error) {
	responsewriters.ErrorNegotiated(err, apiserver.Codecs, schema.GroupVersion{Group: info.APIGroup, Version: info.APIVersion}, w, req)
}

func writeJSON(w http.ResponseWriter, obj interface{}) {
	data, err := json.Marshal(obj)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
}

// ---------------------------------------------------------------- discovery

func (s *shim) establishedCRDs() []*apiextensionsv1.CustomResourceDefinition {
	all, err := s.crdLister.List(labels.Everything())
	if err != nil {
		return nil
	}
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, crd := range all {
		if apiextensionshelpers.IsCRDConditionTrue(crd, apiextensionsv1.Established) {
			out = append(out, crd)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (s *shim) serveAPIVersions(w http.ResponseWriter, req *http.Request) {
	writeJSON(w, &metav1.APIVersions{
		TypeMeta: metav1.TypeMeta{Kind: "APIVersions"},
		Versions: []string{"v1"},
		ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{
			{ClientCIDR: "0.0.0.0/0", ServerAddress: req.Host},
		},
	})
}

func (s *shim) serveCoreResources(w http.ResponseWriter, req *http.Request) {
	list := &metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: "v1",
		APIResources: []metav1.APIResource{},
	}
	for _, crd := range s.establishedCRDs() {
		if crd.Spec.Group != "" {
			continue
		}
		list.APIResources = append(list.APIResources, apiResources(crd, "v1")...)
	}
	writeJSON(w, list)
}

func apiResources(crd *apiextensionsv1.CustomResourceDefinition, ver string) []metav1.APIResource {
	served := false
	storageVersionHash := ""
	for _, v := range crd.Spec.Versions {
		if v.Served && v.Name == ver {
			served = true
		}
		if v.Storage {
			storageVersionHash = discovery.StorageVersionHash(crd.Spec.Group, v.Name, crd.Spec.Names.Kind)
		}
	}
	if !served {
		return nil
	}
	names := crd.Status.AcceptedNames
	namespaced := crd.Spec.Scope == apiextensionsv1.NamespaceScoped
	out := []metav1.APIResource{{
		Name:               names.Plural,
		SingularName:       names.Singular,
		Namespaced:         namespaced,
		Kind:               names.Kind,
		Verbs:              metav1.Verbs{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"},
		ShortNames:         names.ShortNames,
		Categories:         names.Categories,
		StorageVersionHash: storageVersionHash,
	}}
	if sub, err := apiextensionshelpers.GetSubresourcesForVersion(crd, ver); err == nil && sub != nil && sub.Status != nil {
		out = append(out, metav1.APIResource{
			Name:       names.Plural + "/status",
			Namespaced: namespaced,
			Kind:       names.Kind,
			Verbs:      metav1.Verbs{"get", "patch", "update"},
		})
	}
	return out
}

func (s *shim) serveGroups(w http.ResponseWriter, req *http.Request) {
	groups := map[string][]string{}
	for _, crd := range s.establishedCRDs() {
		if crd.Spec.Group == "" {
			continue
		}
		for _, v := range crd.Spec.Versions {
			if !v.Served {
				continue
			}
			found := false
			for _, have := range groups[crd.Spec.Group] {
				found = found || have == v.Name
			}
			if !found {
				groups[crd.Spec.Group] = append(groups[crd.Spec.Group], v.Name)
			}
		}
	}
	list := &metav1.APIGroupList{
		TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"},
		Groups: []metav1.APIGroup{{
			Name:             apiextensionsv1.GroupName,
			Versions:         []metav1.GroupVersionForDiscovery{{GroupVersion: apiextensionsv1.SchemeGroupVersion.String(), Version: "v1"}},
			PreferredVersion: metav1.GroupVersionForDiscovery{GroupVersion: apiextensionsv1.SchemeGroupVersion.String(), Version: "v1"},
		}},
	}
	names := make([]string, 0, len(groups))
	for g := range groups {
		names = append(names, g)
	}
	sort.Strings(names)
	for _, g := range names {
		vers := groups[g]
		sort.Slice(vers, func(i, j int) bool { return version.CompareKubeAwareVersionStrings(vers[i], vers[j]) > 0 })
		group := metav1.APIGroup{Name: g}
		for _, v := range vers {
			group.Versions = append(group.Versions, metav1.GroupVersionForDiscovery{GroupVersion: g + "/" + v, Version: v})
		}
		group.PreferredVersion = group.Versions[0]
		list.Groups = append(list.Groups, group)
	}
	writeJSON(w, list)
}

// ------------------------------------------------------------ request bodies

func (s *shim) fixBody(req *http.Request, info *apirequest.RequestInfo, crd *apiextensionsv1.CustomResourceDefinition) error {
	ct := mediaType(req.Header.Get("Content-Type"))
	isProtobuf := ct == "application/vnd.kubernetes.protobuf"
	if !isProtobuf && ct != "application/json" && ct != "" {
		return nil
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return err
	}
	_ = req.Body.Close()
	if isProtobuf {
		obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, nil)
		if err != nil {
			return fmt.Errorf("decoding protobuf body: %w", err)
		}
		obj.GetObjectKind().SetGroupVersionKind(*gvk)
		if body, err = json.Marshal(obj); err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
	}
	var obj map[string]interface{}
	if err := json.Unmarshal(body, &obj); err == nil && obj != nil {
		changed := false
		// The real server takes apiVersion and kind from the URL when the
		// body leaves them out; the CRD handler insists on them.
		if _, ok := obj["apiVersion"]; !ok {
			obj["apiVersion"] = schema.GroupVersion{Group: info.APIGroup, Version: info.APIVersion}.String()
			changed = true
		}
		if _, ok := obj["kind"]; !ok {
			obj["kind"] = crd.Status.AcceptedNames.Kind
			changed = true
		}
		if info.APIGroup == "" && info.Resource == "secrets" && foldStringData(obj) {
			changed = true
		}
		if changed {
			if body, err = json.Marshal(obj); err != nil {
				return err
			}
		}
	}
	setBody(req, body)
	return nil
}

func setBody(req *http.Request, body []byte) {
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Length", strconv.Itoa(len(body)))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
}

// foldStringData does what the real server does with Secret.stringData.
func foldStringData(obj map[string]interface{}) bool {
	sd, ok := obj["stringData"].(map[string]interface{})
	if !ok {
		_, present := obj["stringData"]
		delete(obj, "stringData")
		return present
	}
	data, _ := obj["data"].(map[string]interface{})
	if data == nil {
		data = map[string]interface{}{}
	}
	for k, v := range sd {
		if str, ok := v.(string); ok {
			data[k] = base64.StdEncoding.EncodeToString([]byte(str))
		}
	}
	obj["data"] = data
	delete(obj, "stringData")
	return true
}

// ---------------------------------------------------- strategic merge patch

func (s *shim) strategicMergePatch(w http.ResponseWriter, req *http.Request, info *apirequest.RequestInfo, crd *apiextensionsv1.CustomResourceDefinition) {
	gvk := schema.GroupVersionKind{Group: info.APIGroup, Version: info.APIVersion, Kind: crd.Status.AcceptedNames.Kind}
	typed, err := scheme.Scheme.New(gvk)
	if err != nil {
		s.writeError(w, req, info, apierrors.NewGenericServerResponse(http.StatusUnsupportedMediaType, "patch", schema.GroupResource{Group: info.APIGroup, Resource: info.Resource}, "", fmt.Sprintf("strategic merge patch is not supported for %s", gvk), 0, false))
		return
	}
	patch, err := io.ReadAll(req.Body)
	if err != nil {
		s.writeError(w, req, info, apierrors.NewBadRequest(err.Error()))
		return
	}
	var patchMap map[string]interface{}
	if err := json.Unmarshal(patch, &patchMap); err != nil {
		s.writeError(w, req, info, apierrors.NewBadRequest(fmt.Sprintf("error decoding patch: %v", err)))
		return
	}
	callerRV := false
	if md, ok := patchMap["metadata"].(map[string]interface{}); ok {
		_, callerRV = md["resourceVersion"]
	}

	for attempt := 0; ; attempt++ {
		getInfo := *info
		getInfo.Verb = "get"
		getReq := req.Clone(apirequest.WithRequestInfo(req.Context(), &getInfo))
		getReq.Method = http.MethodGet
		getReq.URL.RawQuery = ""
		getReq.Body = http.NoBody
		getReq.ContentLength = 0
		getReq.Header.Del("Content-Type")
		getReq.Header.Del("Content-Length")
		getReq.Header.Set("Accept", "application/json")
		got := httptest.NewRecorder()
		s.dispatch(got, getReq, &getInfo)
		if got.Code != http.StatusOK {
			copyRecorded(w, got)
			return
		}
		original := got.Body.Bytes()
		patched, err := strategicpatch.StrategicMergePatch(original, patch, typed)
		if err != nil {
			s.writeError(w, req, info, apierrors.NewGenericServerResponse(http.StatusUnprocessableEntity, "patch", schema.GroupResource{Group: info.APIGroup, Resource: info.Resource}, info.Name, err.Error(), 0, false))
			return
		}
		if info.Resource == "secrets" && info.APIGroup == "" {
			var obj map[string]interface{}
			if json.Unmarshal(patched, &obj) == nil && foldStringData(obj) {
				patched, _ = json.Marshal(obj)
			}
		}
		merge, err := jsonpatch.CreateMergePatch(original, patched)
		if err != nil {
			s.writeError(w, req, info, apierrors.NewInternalError(err))
			return
		}
		if !callerRV {
			var m map[string]interface{}
			var cur struct {
				Metadata struct {
					ResourceVersion string `json:"resourceVersion"`
				} `json:"metadata"`
			}
			if json.Unmarshal(merge, &m) == nil && json.Unmarshal(original, &cur) == nil {
				md, _ := m["metadata"].(map[string]interface{})
				if md == nil {
					md = map[string]interface{}{}
				}
				md["resourceVersion"] = cur.Metadata.ResourceVersion
				m["metadata"] = md
				merge, _ = json.Marshal(m)
			}
		}
		patchReq := req.Clone(req.Context())
		patchReq.Header.Set("Content-Type", string(types.MergePatchType))
		setBody(patchReq, merge)
		res := httptest.NewRecorder()
		s.dispatch(res, patchReq, info)
		if res.Code == http.StatusConflict && !callerRV && attempt < 10 {
			time.Sleep(time.Duration(attempt) * 10 * time.Millisecond)
			continue
		}
		copyRecorded(w, res)
		return
	}
}

func copyRecorded(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// ---------------------------------------------------------------- namespaces

func (s *shim) cleanupNamespace(ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, crd := range s.establishedCRDs() {
		if crd.Spec.Scope != apiextensionsv1.NamespaceScoped {
			continue
		}
		for _, v := range crd.Spec.Versions {
			if !v.Storage {
				continue
			}
			gvr := schema.GroupVersionResource{Group: crd.Spec.Group, Version: v.Name, Resource: crd.Status.AcceptedNames.Plural}
			err := s.dyn.Resource(gvr).Namespace(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				klog.Warningf("cleaning up namespace %s: %s: %v", ns, gvr, err)
			}
		}
	}
}

// ------------------------------------------------------------------ OpenAPI

// The OpenAPI v3 controller publishes the core stand-ins as group version
// "apis//v1" with paths under /apis/v1/. Clients look for "api/v1".
const coreOpenAPIKey = "apis//v1"

func (s *shim) serveOpenAPIV3Index(w http.ResponseWriter, req *http.Request) {
	rec := httptest.NewRecorder()
	s.next.ServeHTTP(rec, req)
	var index struct {
		Paths map[string]map[string]string `json:"paths"`
	}
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &index) != nil || index.Paths[coreOpenAPIKey] == nil {
		copyRecorded(w, rec)
		return
	}
	entry := index.Paths[coreOpenAPIKey]
	hash := ""
	if _, q, ok := strings.Cut(entry["serverRelativeURL"], "?"); ok {
		hash = "?" + q
	}
	delete(index.Paths, coreOpenAPIKey)
	index.Paths["api/v1"] = map[string]string{"serverRelativeURL": "/openapi/v3/api/v1" + hash}
	writeJSON(w, index)
}

func (s *shim) serveOpenAPIV3Core(w http.ResponseWriter, req *http.Request) {
	svc := s.generic.OpenAPIV3VersionedService
	if svc == nil {
		http.NotFound(w, req)
		return
	}
	inner := req.Clone(req.Context())
	inner.URL.Path = "/openapi/v3/" + coreOpenAPIKey
	inner.URL.RawPath = ""
	inner.URL.RawQuery = ""
	inner.Header = http.Header{"Accept": []string{"application/json"}}
	rec := httptest.NewRecorder()
	svc.HandleGroupVersion(rec, inner)
	if rec.Code != http.StatusOK {
		copyRecorded(w, rec)
		return
	}
	body := bytes.ReplaceAll(rec.Body.Bytes(), []byte(`"/apis/v1/`), []byte(`"/api/v1/`))
	contentType := "application/json"
	if accept := req.Header.Get("Accept"); accept != "" && !strings.Contains(accept, "json") && !strings.Contains(accept, "*/*") {
		pb, err := handler3.ToV3ProtoBinary(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		body = pb
		contentType = "application/com.github.proto-openapi.spec.v3.v1.0+protobuf"
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Vary", "Accept")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// ensureNamespaces creates the namespaces that are missing; false until all exist.
func (s *shim) ensureNamespaces(ctx context.Context, names ...string) bool {
	gvr := schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	for _, name := range names {
		obj := &unstructured.Unstructured{Object: map[string]interface{}{
			"apiVersion": "v1",
			"kind":       "Namespace",
			"metadata":   map[string]interface{}{"name": name},
		}}
		_, err := s.dyn.Resource(gvr).Create(ctx, obj, metav1.CreateOptions{FieldManager: "kube-apiserver"})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			klog.V(2).Infof("creating namespace %s: %v", name, err)
			return false
		}
	}
	return true
}
