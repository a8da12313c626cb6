// Tests for the Kubernetes manifests: each file decodes strictly into its
// typed object, the kustomization lists exactly the files present, and the
// rendered DaemonSet (base, components, example overlays) keeps the security
// and wiring properties the README promises.
package kubernetes

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/siftr-probe/siftr-probe/deploy/internal/flags"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/klog/v2"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const (
	namespace = "siftr-probe"
	name      = "siftr-probe"
	// imageRepo is the image name the manifests use, which the documented
	// `kustomize edit set image` maps to the image the user pushed;
	// TestImageName checks the documents agree.
	imageRepo = "ghcr.io/siftr-probe/siftr-probe"
)

// manifests maps each base manifest to the typed object it must decode to.
var manifests = map[string]func() any{
	"namespace.yaml":      func() any { return &corev1.Namespace{} },
	"serviceaccount.yaml": func() any { return &corev1.ServiceAccount{} },
	"configmap.yaml":      func() any { return &corev1.ConfigMap{} },
	"daemonset.yaml":      func() any { return &appsv1.DaemonSet{} },
}

// decodeStrict decodes one YAML document into obj, refusing unknown or
// duplicate fields, and checks apiVersion and kind against obj's type.
func decodeStrict(t *testing.T, data []byte, obj any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(data, obj); err != nil {
		t.Fatalf("strict decode into %T: %v", obj, err)
	}
	var tm struct{ APIVersion, Kind string }
	if err := yaml.Unmarshal(data, &tm); err != nil {
		t.Fatal(err)
	}
	want := map[string][2]string{
		"*v1.Namespace":          {"v1", "Namespace"},
		"*v1.ServiceAccount":     {"v1", "ServiceAccount"},
		"*v1.ConfigMap":          {"v1", "ConfigMap"},
		"*v1.DaemonSet":          {"apps/v1", "DaemonSet"},
		"*v1.ClusterRole":        {"rbac.authorization.k8s.io/v1", "ClusterRole"},
		"*v1.ClusterRoleBinding": {"rbac.authorization.k8s.io/v1", "ClusterRoleBinding"},
	}[fmt.Sprintf("%T", obj)]
	if want != [2]string{} && (tm.APIVersion != want[0] || tm.Kind != want[1]) {
		t.Fatalf("apiVersion/kind = %s/%s, want %s/%s", tm.APIVersion, tm.Kind, want[0], want[1])
	}
}

func readStrict[T any](t *testing.T, file string) *T {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	obj := new(T)
	decodeStrict(t, data, obj)
	return obj
}

func TestManifestsDecodeStrictly(t *testing.T) {
	for file, newObj := range manifests {
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			decodeStrict(t, data, newObj())
		})
	}
}

func TestManifestsAreInNamespace(t *testing.T) {
	ns := readStrict[corev1.Namespace](t, "namespace.yaml")
	if ns.Name != namespace {
		t.Errorf("namespace is %q, want %q", ns.Name, namespace)
	}
	// hostNetwork and NET_RAW are outside the baseline Pod Security Standard.
	if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "privileged" {
		t.Errorf("pod-security enforce label = %q, want privileged", got)
	}
	sa := readStrict[corev1.ServiceAccount](t, "serviceaccount.yaml")
	cm := readStrict[corev1.ConfigMap](t, "configmap.yaml")
	ds := readStrict[appsv1.DaemonSet](t, "daemonset.yaml")
	for what, ns := range map[string]string{"ServiceAccount": sa.Namespace, "ConfigMap": cm.Namespace, "DaemonSet": ds.Namespace} {
		if ns != namespace {
			t.Errorf("%s namespace = %q, want %q", what, ns, namespace)
		}
	}
	if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Error("ServiceAccount should set automountServiceAccountToken: false (the probe never calls the API)")
	}
}

// readKustomization decodes a kustomization.yaml (Kustomization or
// Component) strictly.
func readKustomization(t *testing.T, file string) *types.Kustomization {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	k := &types.Kustomization{}
	if err := yaml.UnmarshalStrict(data, k); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return k
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	k := readKustomization(t, "kustomization.yaml")
	if k.Kind != types.KustomizationKind {
		t.Errorf("kind = %q, want %s", k.Kind, types.KustomizationKind)
	}
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files = slices.DeleteFunc(files, func(f string) bool { return f == "kustomization.yaml" })
	listed := slices.Clone(k.Resources)
	sort.Strings(files)
	sort.Strings(listed)
	if !slices.Equal(files, listed) {
		t.Errorf("kustomization resources %v, want exactly the manifests present %v", listed, files)
	}
	var known []string
	for f := range manifests {
		known = append(known, f)
	}
	sort.Strings(known)
	if !slices.Equal(files, known) {
		t.Errorf("manifests present %v, but this test checks %v: add the new file to the manifests table", files, known)
	}
}

func TestComponentsAreComplete(t *testing.T) {
	for _, dir := range []string{"hostpath", "netns", "fleet", "control"} {
		t.Run(dir, func(t *testing.T) {
			k := readKustomization(t, filepath.Join(dir, "kustomization.yaml"))
			if k.Kind != types.ComponentKind {
				t.Errorf("kind = %q, want %s", k.Kind, types.ComponentKind)
			}
			var listed []string
			for _, p := range k.Patches {
				if p.Path == "" {
					continue
				}
				listed = append(listed, p.Path)
			}
			listed = append(listed, k.Resources...)
			for _, f := range listed {
				if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
					t.Errorf("%s: %v", f, err)
				}
			}
			// Every YAML file next to the component is one of its patches
			// or resources.
			files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
			for _, f := range files {
				if b := filepath.Base(f); b != "kustomization.yaml" && !slices.Contains(listed, b) {
					t.Errorf("%s is not listed in %s/kustomization.yaml", b, dir)
				}
			}
		})
	}
}

// rendered is the output of a kustomize build, decoded into typed objects.
type rendered struct {
	ns  *corev1.Namespace
	sa  *corev1.ServiceAccount
	cm  *corev1.ConfigMap
	ds  *appsv1.DaemonSet
	cr  []*rbacv1.ClusterRole        // only the fleet component has RBAC
	crb []*rbacv1.ClusterRoleBinding // objects
	all []string                     // kind/name of every object
}

// build runs kustomize on dir of fsys and decodes each object strictly.
func build(t *testing.T, fsys filesys.FileSystem, dir string) *rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(fsys, dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out := &rendered{}
	for _, r := range rm.Resources() {
		data, err := r.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var obj any
		switch r.GetKind() {
		case "Namespace":
			out.ns = &corev1.Namespace{}
			obj = out.ns
		case "ServiceAccount":
			out.sa = &corev1.ServiceAccount{}
			obj = out.sa
		case "ConfigMap":
			out.cm = &corev1.ConfigMap{}
			obj = out.cm
		case "DaemonSet":
			out.ds = &appsv1.DaemonSet{}
			obj = out.ds
		case "ClusterRole":
			cr := &rbacv1.ClusterRole{}
			out.cr = append(out.cr, cr)
			obj = cr
		case "ClusterRoleBinding":
			crb := &rbacv1.ClusterRoleBinding{}
			out.crb = append(out.crb, crb)
			obj = crb
		default:
			t.Fatalf("unexpected %s %s in the build", r.GetKind(), r.GetName())
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(obj); err != nil {
			t.Fatalf("%s %s: %v", r.GetKind(), r.GetName(), err)
		}
		out.all = append(out.all, r.GetKind()+"/"+r.GetName())
	}
	if out.ns == nil || out.sa == nil || out.cm == nil || out.ds == nil {
		t.Fatalf("build has %v, want a Namespace, ServiceAccount, ConfigMap and DaemonSet", out.all)
	}
	return out
}

// memFS copies the deploy tree's kubernetes/ and examples/ directories into
// an in-memory file system under /deploy, so overlays can be added freely.
func memFS(t *testing.T) filesys.FileSystem {
	t.Helper()
	fsys := filesys.MakeFsInMemory()
	for _, dir := range []string{".", filepath.Join("..", "examples")} {
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") {
				return err
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(".", p)
			if !strings.HasPrefix(rel, "..") {
				rel = filepath.Join("kubernetes", rel)
			} else {
				rel = strings.TrimPrefix(filepath.ToSlash(rel), "../")
			}
			return fsys.WriteFile(path.Join("/deploy", filepath.ToSlash(rel)), data)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return fsys
}

// overlay writes a kustomization at /overlay/NAME over the base and builds it.
func overlay(t *testing.T, fsys filesys.FileSystem, name, body string) *rendered {
	t.Helper()
	dir := "/overlay/" + name
	k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../deploy/kubernetes\n" + body
	if err := fsys.WriteFile(dir+"/kustomization.yaml", []byte(k)); err != nil {
		t.Fatal(err)
	}
	return build(t, fsys, dir)
}

func TestBaseBuild(t *testing.T) {
	r := build(t, filesys.MakeFsOnDisk(), ".")
	checkProbe(t, r, []corev1.Capability{"NET_RAW"})
	if r.ds.Spec.Template.Spec.HostPID {
		t.Error("hostPID is on in the base; only the netns component needs it")
	}
	// The base logs to stdout: its one volume is the control socket's
	// directory, in the pod's memory.
	for _, v := range r.ds.Spec.Template.Spec.Volumes {
		if v.Name != "control" || v.EmptyDir == nil {
			t.Errorf("the base mounts volume %+v; it should log to stdout and keep only the control socket, in an emptyDir", v)
		}
	}
	if v := controlVolume(t, r); v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory {
		t.Errorf("the base's control volume %+v, want an emptyDir in memory", v)
	}
	checkNoAPIAccess(t, r)
	if _, ok := r.cm.Data[flags.EnvName("all-netns")]; ok {
		t.Error("the base sets SIFTR_PROBE_ALL_NETNS; only the fleet component does")
	}
}

// controlVolume returns the volume mounted at the directory of
// SIFTR_PROBE_CONTROL, checking that it is mounted writable and has one
// source.
func controlVolume(t *testing.T, r *rendered) corev1.Volume {
	t.Helper()
	sock := r.cm.Data[flags.EnvName("control")]
	if !strings.HasPrefix(sock, "/run/") {
		t.Fatalf("SIFTR_PROBE_CONTROL = %q, want a path under /run (the root filesystem is read-only)", sock)
	}
	spec := r.ds.Spec.Template.Spec
	for _, m := range spec.Containers[0].VolumeMounts {
		if m.MountPath != filepath.Dir(sock) {
			continue
		}
		if m.ReadOnly {
			t.Errorf("%s is mounted read-only: the probe makes its socket there", m.MountPath)
		}
		for _, v := range spec.Volumes {
			if v.Name != m.Name {
				continue
			}
			b, _ := json.Marshal(v.VolumeSource)
			var sources map[string]any
			json.Unmarshal(b, &sources)
			if len(sources) != 1 {
				t.Errorf("volume %s has %d sources %v, want one", v.Name, len(sources), sources)
			}
			return v
		}
	}
	t.Fatalf("nothing is mounted at %s, the control socket's directory (the root filesystem is read-only)", filepath.Dir(sock))
	return corev1.Volume{}
}

// TestControlComponent: the control socket on the node, in a hostPath
// made if missing, instead of the pod's emptyDir.
func TestControlComponent(t *testing.T) {
	fsys := memFS(t)
	r := overlay(t, fsys, "control", "components:\n  - ../../deploy/kubernetes/control\n")
	checkProbe(t, r, []corev1.Capability{"NET_RAW"})
	v := controlVolume(t, r)
	if v.HostPath == nil || v.HostPath.Path != "/run/siftr-probe" || v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectoryOrCreate || v.EmptyDir != nil {
		t.Errorf("control volume %+v, want only the hostPath /run/siftr-probe (DirectoryOrCreate)", v)
	}
	checkNoAPIAccess(t, r)
}

// checkNoAPIAccess asserts a build gives the probe no way to the API
// server: no RBAC objects, and no service account token in the pod.
func checkNoAPIAccess(t *testing.T, r *rendered) {
	t.Helper()
	if len(r.cr) != 0 || len(r.crb) != 0 {
		t.Errorf("RBAC objects %v; only the fleet component reads the API", r.all)
	}
	if a := r.ds.Spec.Template.Spec.AutomountServiceAccountToken; a == nil || *a {
		t.Errorf("pod automountServiceAccountToken = %v, want false: without the fleet component the probe never calls the API", a)
	}
	if a := r.sa.AutomountServiceAccountToken; a == nil || *a {
		t.Errorf("ServiceAccount automountServiceAccountToken = %v, want false", a)
	}
}

func TestConfigMapDefaults(t *testing.T) {
	cm := readStrict[corev1.ConfigMap](t, "configmap.yaml")
	want := map[string]string{
		"SIFTR_PROBE_IFACE":        "eth0",
		"SIFTR_PROBE_PORT":         "5201",
		"SIFTR_PROBE_FORMAT":       "jsonl",
		"SIFTR_PROBE_LOGFILE":      "-",
		"SIFTR_PROBE_METRICS_ADDR": "0.0.0.0:9721",
		"SIFTR_PROBE_QUIET":        "true",
		"SIFTR_PROBE_WORKERS":      "1",
		"SIFTR_PROBE_CONTROL":      "/run/siftr-probe/ctl",
	}
	for k, v := range want {
		if got, ok := cm.Data[k]; !ok || got != v {
			t.Errorf("%s = %q (set: %t), want %q", k, got, ok, v)
		}
	}
}

func TestHostPathComponent(t *testing.T) {
	fsys := memFS(t)
	r := overlay(t, fsys, "hostpath", "components:\n  - ../../deploy/kubernetes/hostpath\n")
	checkProbe(t, r, []corev1.Capability{"NET_RAW"})
	checkNoAPIAccess(t, r)
	const logfile = "/var/log/siftr-probe/siftr.jsonl"
	if got := r.cm.Data["SIFTR_PROBE_LOGFILE"]; got != logfile {
		t.Errorf("SIFTR_PROBE_LOGFILE = %q, want %q", got, logfile)
	}
	if got := r.cm.Data["SIFTR_PROBE_FORMAT"]; got != "jsonl" {
		t.Errorf("SIFTR_PROBE_FORMAT = %q, want jsonl (the file is named .jsonl)", got)
	}
	spec := r.ds.Spec.Template.Spec
	c := spec.Containers[0]
	var mounted bool
	for _, m := range c.VolumeMounts {
		if m.MountPath != filepath.Dir(logfile) || m.ReadOnly {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.HostPath != nil && v.HostPath.Path == filepath.Dir(logfile) &&
				v.HostPath.Type != nil && *v.HostPath.Type == corev1.HostPathDirectoryOrCreate {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("no writable hostPath %s (DirectoryOrCreate) mounted at %s: mounts %+v, volumes %+v",
			filepath.Dir(logfile), filepath.Dir(logfile), c.VolumeMounts, spec.Volumes)
	}
}

func TestNetnsComponent(t *testing.T) {
	fsys := memFS(t)
	r := overlay(t, fsys, "netns", "components:\n  - ../../deploy/kubernetes/netns\n")
	checkProbe(t, r, []corev1.Capability{"NET_RAW", "SYS_ADMIN", "SYS_PTRACE"})
	checkNoAPIAccess(t, r)
	spec := r.ds.Spec.Template.Spec
	if !spec.HostPID {
		t.Error("hostPID is off: /proc/PID/ns/net of host processes is not visible")
	}
	var ok bool
	for _, m := range spec.Containers[0].VolumeMounts {
		if m.MountPath == "/run/netns" && m.ReadOnly && m.MountPropagation != nil &&
			*m.MountPropagation == corev1.MountPropagationHostToContainer {
			ok = true
		}
	}
	if !ok {
		t.Error("/run/netns is not mounted read-only with HostToContainer propagation")
	}
}

// TestExampleOverlay builds deploy/examples/kubernetes, the overlay the
// README tells users to copy, and checks it changes interface and port.
func TestExampleOverlay(t *testing.T) {
	r := build(t, filesys.MakeFsOnDisk(), filepath.Join("..", "examples", "kubernetes"))
	checkProbe(t, r, []corev1.Capability{"NET_RAW"})
	if got := r.cm.Data["SIFTR_PROBE_IFACE"]; got != "ens5" {
		t.Errorf("SIFTR_PROBE_IFACE = %q, want ens5", got)
	}
	if got := r.cm.Data["SIFTR_PROBE_PORT"]; got != "443" {
		t.Errorf("SIFTR_PROBE_PORT = %q, want 443", got)
	}
	if got := r.cm.Data["SIFTR_PROBE_METRICS_ADDR"]; got != "0.0.0.0:9721" {
		t.Errorf("merge lost SIFTR_PROBE_METRICS_ADDR: %q", got)
	}
}

// TestNetnsExampleOverlay builds deploy/examples/kubernetes-netns: the netns
// component with a namespace path, pinned to one node (checkProbe asserts
// the pinning for every build that sets SIFTR_PROBE_NETNS). Its commented
// AppArmor patch, uncommented, must build too.
func TestNetnsExampleOverlay(t *testing.T) {
	dir := filepath.Join("..", "examples", "kubernetes-netns")
	r := build(t, filesys.MakeFsOnDisk(), dir)
	checkProbe(t, r, []corev1.Capability{"NET_RAW", "SYS_ADMIN", "SYS_PTRACE"})
	ns := r.cm.Data["SIFTR_PROBE_NETNS"]
	if !strings.HasPrefix(ns, "/run/netns/") && !strings.HasPrefix(ns, "/proc/") {
		t.Errorf("SIFTR_PROBE_NETNS = %q, want a /run/netns/NAME or /proc/PID/ns/net path", ns)
	}
	spec := r.ds.Spec.Template.Spec
	if spec.NodeSelector["kubernetes.io/hostname"] == "" {
		t.Errorf("nodeSelector %v does not pin kubernetes.io/hostname", spec.NodeSelector)
	}
	if spec.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("nodeSelector %v lost the base's kubernetes.io/os: linux", spec.NodeSelector)
	}
	if sc := spec.Containers[0].SecurityContext; sc.AppArmorProfile != nil {
		t.Errorf("appArmorProfile %+v is set by default; it is only for /proc/PID/ns/net paths on AppArmor nodes", sc.AppArmorProfile)
	}

	// Uncomment the AppArmor patch: it must build, decode strictly and
	// leave the container unconfined.
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// It is the commented-out block from "  # - patch:" to the end.
	head, patch, ok := strings.Cut(string(data), "\n  # - patch:")
	if !ok || !strings.Contains(patch, "appArmorProfile") {
		t.Fatal("no commented AppArmor patch at the end of the overlay")
	}
	uncommented := head + "\n  - patch:" + strings.ReplaceAll(patch, "\n  # ", "\n  ")
	fsys := memFS(t)
	if err := fsys.WriteFile("/deploy/examples/kubernetes-netns/kustomization.yaml", []byte(uncommented)); err != nil {
		t.Fatal(err)
	}
	ra := build(t, fsys, "/deploy/examples/kubernetes-netns")
	checkProbe(t, ra, []corev1.Capability{"NET_RAW", "SYS_ADMIN", "SYS_PTRACE"})
	if p := ra.ds.Spec.Template.Spec.Containers[0].SecurityContext.AppArmorProfile; p == nil || p.Type != corev1.AppArmorProfileTypeUnconfined {
		t.Errorf("with the AppArmor patch uncommented, appArmorProfile = %+v, want Unconfined", p)
	}
}

// TestPatchInterfaceAndPort is the README's other recipe: a strategic-merge
// patch of the ConfigMap in an overlay.
func TestPatchInterfaceAndPort(t *testing.T) {
	fsys := memFS(t)
	r := overlay(t, fsys, "patch", `patches:
  - patch: |-
      apiVersion: v1
      kind: ConfigMap
      metadata:
        name: siftr-probe
        namespace: siftr-probe
      data:
        SIFTR_PROBE_IFACE: bond0
        SIFTR_PROBE_PORT: "0"
`)
	checkProbe(t, r, []corev1.Capability{"NET_RAW"})
	if r.cm.Data["SIFTR_PROBE_IFACE"] != "bond0" || r.cm.Data["SIFTR_PROBE_PORT"] != "0" {
		t.Errorf("patched data = %v", r.cm.Data)
	}
}

// TestImageName checks that every build recipe pushes to the user's
// $IMAGE, not a fixed registry, and tells `kustomize edit set image` to
// replace the image name the DaemonSet and kustomization use.
func TestImageName(t *testing.T) {
	docs := []string{
		filepath.Join("..", "container", "Dockerfile"),
		filepath.Join("..", "container", "README.md"),
		filepath.Join("..", "README.md"),
		filepath.Join("..", "..", "README.md"),
		"README.md",
	}
	setImage := regexp.MustCompile(`kustomize edit set image (\S+)=`)
	push := regexp.MustCompile(`-t\s+(\S+)\s+--push`)
	for _, f := range docs {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		names := setImage.FindAllSubmatch(data, -1)
		if len(names) == 0 {
			t.Errorf("%s: no `kustomize edit set image %s=...`", f, imageRepo)
		}
		for _, m := range names {
			if string(m[1]) != imageRepo {
				t.Errorf("%s: kustomize edit set image %s=..., want the manifests' image name %s", f, m[1], imageRepo)
			}
		}
		for _, m := range push.FindAllSubmatch(data, -1) {
			if string(m[1]) != `"$IMAGE"` {
				t.Errorf("%s: pushes -t %s, want -t \"$IMAGE\" (a registry of the user's)", f, m[1])
			}
		}
	}
	ds := readStrict[appsv1.DaemonSet](t, "daemonset.yaml")
	if img := ds.Spec.Template.Spec.Containers[0].Image; !strings.HasPrefix(img, imageRepo+":") {
		t.Errorf("daemonset.yaml image %q is not %s:TAG", img, imageRepo)
	}
	k := readKustomization(t, "kustomization.yaml")
	if len(k.Images) != 1 || k.Images[0].Name != imageRepo {
		t.Errorf("kustomization images %+v, want one entry named %s", k.Images, imageRepo)
	}
}

// checkProbe asserts what every variant must keep: the DaemonSet's
// scheduling, privileges, resources, probes and wiring to the ConfigMap.
func checkProbe(t *testing.T, r *rendered, wantCaps []corev1.Capability) {
	t.Helper()
	ds, cm := r.ds, r.cm
	spec := ds.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]

	t.Run("names", func(t *testing.T) {
		for _, o := range []struct{ kind, ns, name string }{
			{"ServiceAccount", r.sa.Namespace, r.sa.Name},
			{"ConfigMap", cm.Namespace, cm.Name},
			{"DaemonSet", ds.Namespace, ds.Name},
		} {
			if o.ns != r.ns.Name {
				t.Errorf("%s %s is in namespace %q, want %q", o.kind, o.name, o.ns, r.ns.Name)
			}
		}
		if spec.ServiceAccountName != r.sa.Name {
			t.Errorf("serviceAccountName %q, want %q", spec.ServiceAccountName, r.sa.Name)
		}
		if !strings.HasPrefix(c.Image, imageRepo+":") && !strings.HasPrefix(c.Image, imageRepo+"@") {
			t.Errorf("image %q, want %s", c.Image, imageRepo)
		}
	})

	t.Run("selector", func(t *testing.T) {
		for k, v := range ds.Spec.Selector.MatchLabels {
			if ds.Spec.Template.Labels[k] != v {
				t.Errorf("selector %s=%s does not match the pod template labels %v", k, v, ds.Spec.Template.Labels)
			}
		}
		if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType {
			t.Errorf("updateStrategy %q, want RollingUpdate", ds.Spec.UpdateStrategy.Type)
		}
		if ru := ds.Spec.UpdateStrategy.RollingUpdate; ru != nil && ru.MaxSurge != nil && ru.MaxSurge.IntValue() != 0 {
			t.Errorf("maxSurge %v: with hostNetwork the old and new pod would both bind the metrics port", ru.MaxSurge)
		}
	})

	t.Run("host network", func(t *testing.T) {
		if !spec.HostNetwork {
			t.Error("hostNetwork is off: the probe would see only its own pod's traffic")
		}
		if spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
			t.Errorf("dnsPolicy %q, want ClusterFirstWithHostNet", spec.DNSPolicy)
		}
	})

	t.Run("tolerations", func(t *testing.T) {
		taints := []corev1.Taint{
			{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule},
			{Key: "node-role.kubernetes.io/master", Effect: corev1.TaintEffectNoSchedule},
		}
		for _, taint := range taints {
			var ok bool
			for _, tol := range spec.Tolerations {
				if tol.ToleratesTaint(klog.Background(), &taint, false) {
					ok = true
				}
			}
			if !ok {
				t.Errorf("no toleration for %s:%s in %+v", taint.Key, taint.Effect, spec.Tolerations)
			}
		}
	})

	t.Run("security context", func(t *testing.T) {
		sc := c.SecurityContext
		if sc == nil || sc.Capabilities == nil {
			t.Fatal("container has no securityContext.capabilities")
		}
		if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("capabilities drop %v, want [ALL]", sc.Capabilities.Drop)
		}
		add := slices.Clone(sc.Capabilities.Add)
		slices.Sort(add)
		if !slices.Equal(add, wantCaps) {
			t.Errorf("capabilities add %v, want exactly %v", sc.Capabilities.Add, wantCaps)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Error("readOnlyRootFilesystem is not true")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Error("allowPrivilegeEscalation is not false")
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Error("container is privileged")
		}
		// Added capabilities are effective only for UID 0 (see daemonset.yaml).
		uid := sc.RunAsUser
		if uid == nil && spec.SecurityContext != nil {
			uid = spec.SecurityContext.RunAsUser
		}
		if uid == nil || *uid != 0 {
			t.Errorf("runAsUser %v, want 0: the image's default user 65532 would not keep NET_RAW", uid)
		}
	})

	t.Run("resources", func(t *testing.T) {
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, okReq := c.Resources.Requests[res]
			lim, okLim := c.Resources.Limits[res]
			if !okReq || !okLim {
				t.Errorf("%s: request set %t, limit set %t; want both", res, okReq, okLim)
				continue
			}
			if req.Cmp(lim) > 0 {
				t.Errorf("%s request %s exceeds limit %s", res, req.String(), lim.String())
			}
		}
		// One ring per worker: more workers than CPUs the container may use
		// add ring memory, not throughput.
		if w, ok := cm.Data[flags.EnvName("workers")]; ok {
			n, err := strconv.Atoi(w)
			cpus := (c.Resources.Limits.Cpu().MilliValue() + 999) / 1000
			if err != nil || n < 1 || int64(n) > cpus {
				t.Errorf("SIFTR_PROBE_WORKERS=%q, want 1 to %d (the CPU limit %s)", w, cpus, c.Resources.Limits.Cpu())
			}
		}
	})

	t.Run("metrics port", func(t *testing.T) {
		addr, ok := cm.Data[flags.EnvName("metrics-addr")]
		if !ok {
			t.Fatal("ConfigMap does not set SIFTR_PROBE_METRICS_ADDR; the probes would have nothing to hit")
		}
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("SIFTR_PROBE_METRICS_ADDR %q: %v", addr, err)
		}
		port, err := strconv.Atoi(p)
		if err != nil {
			t.Fatal(err)
		}
		var named string
		for _, cp := range c.Ports {
			if int(cp.ContainerPort) == port {
				named = cp.Name
			}
		}
		if named == "" {
			t.Errorf("no containerPort %d in %+v", port, c.Ports)
		}
		for what, pr := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
			if pr == nil || pr.HTTPGet == nil {
				t.Errorf("%s probe is not an httpGet", what)
				continue
			}
			if pr.HTTPGet.Path != "/healthz" {
				t.Errorf("%s probe path %q, want /healthz", what, pr.HTTPGet.Path)
			}
			if !portIs(pr.HTTPGet.Port, port, named) {
				t.Errorf("%s probe port %s, want %d", what, pr.HTTPGet.Port.String(), port)
			}
		}
		ann := ds.Spec.Template.Annotations
		if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != p || ann["prometheus.io/path"] != "/metrics" {
			t.Errorf("scrape annotations %v, want scrape=true port=%s path=/metrics", ann, p)
		}
	})

	t.Run("config", func(t *testing.T) {
		var fromCM bool
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef != nil && ef.ConfigMapRef.Name == cm.Name {
				fromCM = true
			}
		}
		if !fromCM {
			t.Errorf("container envFrom %+v does not reference ConfigMap %s", c.EnvFrom, cm.Name)
		}
		for k := range cm.Data {
			if !flags.IsKnown(k) {
				t.Errorf("ConfigMap key %s is not SIFTR_PROBE_<flag> for any flag in %v", k, flags.Known)
			}
		}
		for _, e := range c.Env {
			if strings.HasPrefix(e.Name, "SIFTR_PROBE_") && !flags.IsKnown(e.Name) {
				t.Errorf("env %s is not a known flag", e.Name)
			}
		}
		if cm.Data[flags.EnvName("iface")] == "" {
			t.Error("SIFTR_PROBE_IFACE is empty: the probe refuses to start without an interface")
		}
		if f := cm.Data[flags.EnvName("format")]; f != "jsonl" && f != "siftr" {
			t.Errorf("SIFTR_PROBE_FORMAT %q", f)
		}
		// A namespace path exists on one node only: elsewhere the probe
		// exits and the pod crash-loops.
		if cm.Data[flags.EnvName("netns")] != "" && spec.NodeName == "" && spec.NodeSelector["kubernetes.io/hostname"] == "" {
			t.Errorf("SIFTR_PROBE_NETNS is set but the DaemonSet is not pinned to a node (nodeSelector kubernetes.io/hostname or nodeName)")
		}
	})
}

func portIs(p intstr.IntOrString, port int, name string) bool {
	if p.Type == intstr.String {
		return p.StrVal == name
	}
	return p.IntValue() == port
}
