// Command kube-apiserver is the test control plane's API server.
//
// Debian does not package k8s.io/kubernetes, so a real kube-apiserver cannot
// be built from packages. This is the CRD-serving API server of
// k8s.io/apiextensions-apiserver, run standalone, with what it lacks for
// kubectl, the Python client and kopf added around it:
//
//   - no core informers and no admission plugins (they wait for core
//     resources that nothing serves, so /readyz would never pass);
//   - /api, /api/v1 and /apis discovery, listing the custom resources and
//     the stand-ins;
//   - OpenAPI v2 and v3;
//   - the built-in kinds the operator touches (Namespace, Secret, CronJob,
//     ...) served as "stand-in" CRDs, written straight into etcd because the
//     CRD API refuses the core group "" and the group "batch";
//   - strategic-merge-patch and protobuf request bodies translated for the
//     stand-ins (see shim.go).
//
// Flags are those of apiextensions-apiserver plus --standin-crds.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/spf13/cobra"
	noopoteltrace "go.opentelemetry.io/otel/trace/noop"

	"k8s.io/apiextensions-apiserver/pkg/apiserver"
	"k8s.io/apiextensions-apiserver/pkg/cmd/server/options"
	generatedopenapi "k8s.io/apiextensions-apiserver/pkg/generated/openapi"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/admission"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/util/openapi"
	"k8s.io/apiserver/pkg/util/webhook"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/component-base/cli"
	netutils "k8s.io/utils/net"
)

func main() {
	ctx := genericapiserver.SetupSignalContext()
	o := options.NewCustomResourceDefinitionsServerOptions(os.Stdout, os.Stderr)

	// Standalone: there is no core API server to delegate anything to.
	o.RecommendedOptions.CoreAPI = nil
	o.RecommendedOptions.Admission = nil
	o.RecommendedOptions.Features.EnablePriorityAndFairness = false
	o.RecommendedOptions.Authentication.RemoteKubeConfigFileOptional = true
	o.RecommendedOptions.Authentication.SkipInClusterLookup = true
	o.RecommendedOptions.Authorization.RemoteKubeConfigFileOptional = true

	var standinFile string
	cmd := &cobra.Command{
		Use:          "kube-apiserver",
		Short:        "CRD-serving Kubernetes API server for tests",
		SilenceUsage: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			return o.ServerRunOptions.ComponentGlobalsRegistry.Set()
		},
		RunE: func(c *cobra.Command, args []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return run(c.Context(), o, standinFile)
		},
	}
	cmd.SetContext(ctx)
	fs := cmd.Flags()
	o.AddFlags(fs)
	fs.StringVar(&standinFile, "standin-crds", "", "JSON file with a List of CustomResourceDefinitions for built-in kinds, written into etcd before serving")
	os.Exit(cli.Run(cmd))
}

func run(ctx context.Context, o *options.CustomResourceDefinitionsServerOptions, standinFile string) error {
	if standinFile != "" {
		if err := writeStandins(ctx, o, standinFile); err != nil {
			return fmt.Errorf("stand-in CRDs: %w", err)
		}
	}

	sh := &shim{}
	config, err := buildConfig(o, sh)
	if err != nil {
		return err
	}
	server, err := config.Complete().New(genericapiserver.NewEmptyDelegate())
	if err != nil {
		return err
	}
	if err := sh.init(server); err != nil {
		return err
	}
	if standinFile != "" {
		// Like a real cluster: these namespaces exist from the start. /readyz
		// waits for post-start hooks, so it passes only once they do.
		server.GenericAPIServer.AddPostStartHookOrDie("tablerefresh-system-namespaces", func(hookCtx genericapiserver.PostStartHookContext) error {
			return wait.PollUntilContextCancel(hookCtx.Context, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
				return sh.ensureNamespaces(ctx, "default", "kube-system", "kube-public", "kube-node-lease"), nil
			})
		})
	}
	return server.GenericAPIServer.PrepareRun().RunWithContext(ctx)
}

// buildConfig is options.Config without the core informers, the webhook
// service resolver that needs them, and admission; with OpenAPI v2 and the
// shim in the handler chain.
func buildConfig(o *options.CustomResourceDefinitionsServerOptions, sh *shim) (*apiserver.Config, error) {
	if err := o.RecommendedOptions.SecureServing.MaybeDefaultWithSelfSignedCerts("localhost", nil, []net.IP{netutils.ParseIPSloppy("127.0.0.1")}); err != nil {
		return nil, fmt.Errorf("error creating self-signed certificates: %v", err)
	}

	serverConfig := genericapiserver.NewRecommendedConfig(apiserver.Codecs)
	if err := o.ServerRunOptions.ApplyTo(&serverConfig.Config); err != nil {
		return nil, err
	}
	if err := o.RecommendedOptions.ApplyTo(serverConfig); err != nil {
		return nil, err
	}
	if err := o.APIEnablement.ApplyTo(&serverConfig.Config, apiserver.DefaultAPIResourceConfigSource(), apiserver.Scheme); err != nil {
		return nil, err
	}

	defs := openapi.GetOpenAPIDefinitionsWithoutDisabledFeatures(generatedopenapi.GetOpenAPIDefinitions)
	namer := openapinamer.NewDefinitionNamer(apiserver.Scheme, scheme.Scheme)
	serverConfig.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(defs, namer)
	serverConfig.OpenAPIConfig.Info.Title = "Kubernetes"
	serverConfig.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(defs, namer)
	serverConfig.OpenAPIV3Config.Info.Title = "Kubernetes"

	serverConfig.AdmissionControl = admission.NewChainHandler()
	serverConfig.BuildHandlerChainFunc = func(apiHandler http.Handler, c *genericapiserver.Config) http.Handler {
		return genericapiserver.DefaultBuildHandlerChain(sh.wrap(apiHandler), c)
	}

	config := &apiserver.Config{
		GenericConfig: serverConfig,
		ExtraConfig: apiserver.ExtraConfig{
			CRDRESTOptionsGetter: options.NewCRDRESTOptionsGetter(*o.RecommendedOptions.Etcd, serverConfig.ResourceTransformers, serverConfig.StorageObjectCountTracker),
			ServiceResolver:      noServices{},
			AuthResolverWrapper:  webhook.NewDefaultAuthenticationInfoResolverWrapper(nil, nil, serverConfig.LoopbackClientConfig, noopoteltrace.NewTracerProvider()),
		},
	}
	return config, nil
}

// noServices resolves no webhook services: there are no Services here.
type noServices struct{}

func (noServices) ResolveEndpoint(namespace, name string, port int32) (*url.URL, error) {
	return nil, fmt.Errorf("services are not served by the test control plane (%s/%s)", namespace, name)
}
