package kubernetes

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/siftr-probe/siftr-probe/deploy/internal/flags"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// fleetCaps are the fleet component's capabilities, sorted; each is
// explained in fleet/kustomization.yaml and README.md.
var fleetCaps = []corev1.Capability{"BPF", "NET_ADMIN", "NET_RAW", "PERFMON", "SYS_ADMIN", "SYS_PTRACE"}

// TestFleetComponent builds the fleet component the two documented ways (in
// an overlay, and added to the base with `kustomize edit add component
// fleet`) and checks it grants exactly what --all-netns needs.
func TestFleetComponent(t *testing.T) {
	t.Run("overlay", func(t *testing.T) {
		fsys := memFS(t)
		checkFleet(t, overlay(t, fsys, "fleet", "components:\n  - ../../deploy/kubernetes/fleet\n"))
	})
	t.Run("in the base", func(t *testing.T) {
		fsys := memFS(t)
		const k = "/deploy/kubernetes/kustomization.yaml"
		data, err := fsys.ReadFile(k)
		if err != nil {
			t.Fatal(err)
		}
		if err := fsys.WriteFile(k, append(data, "components:\n  - fleet\n"...)); err != nil {
			t.Fatal(err)
		}
		checkFleet(t, build(t, fsys, "/deploy/kubernetes"))
	})
}

func checkFleet(t *testing.T, r *rendered) {
	t.Helper()
	checkProbe(t, r, fleetCaps)
	spec := r.ds.Spec.Template.Spec
	c := spec.Containers[0]

	t.Run("host", func(t *testing.T) {
		if !spec.HostPID {
			t.Error("hostPID is off: the pods' /proc/PID/ns/net are not visible")
		}
		if spec.HostIPC {
			t.Error("hostIPC is on; nothing needs it")
		}
		if sc := c.SecurityContext; sc.AppArmorProfile != nil || sc.SELinuxOptions != nil || sc.SeccompProfile != nil {
			t.Errorf("container security context loosens AppArmor, SELinux or seccomp: %+v", sc)
		}
		if p := spec.SecurityContext.SeccompProfile; p == nil || p.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("pod seccomp profile %+v, want RuntimeDefault", p)
		}
	})

	t.Run("volumes", func(t *testing.T) {
		// Exactly /run/netns, read-only: no /sys/fs/bpf (the programs are
		// not pinned), no runtime socket, nothing writable on the node.
		if len(spec.Volumes) != 1 || spec.Volumes[0].HostPath == nil || spec.Volumes[0].HostPath.Path != "/run/netns" {
			t.Fatalf("volumes %+v, want the node's /run/netns alone", spec.Volumes)
		}
		if len(c.VolumeMounts) != 1 {
			t.Fatalf("volume mounts %+v, want one", c.VolumeMounts)
		}
		m := c.VolumeMounts[0]
		if m.Name != spec.Volumes[0].Name || m.MountPath != "/run/netns" || !m.ReadOnly ||
			m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer {
			t.Errorf("mount %+v, want %s at /run/netns, read-only, HostToContainer", m, spec.Volumes[0].Name)
		}
	})

	t.Run("config", func(t *testing.T) {
		want := map[string]string{"all-netns": "true", "state": "auto"}
		for f, v := range want {
			if got := r.cm.Data[flags.EnvName(f)]; got != v {
				t.Errorf("%s = %q, want %q", flags.EnvName(f), got, v)
			}
		}
		if n := r.cm.Data[flags.EnvName("netns")]; n != "" {
			t.Errorf("SIFTR_PROBE_NETNS = %q: the fleet follows every namespace, not one", n)
		}
		var node []corev1.EnvVar
		for _, e := range c.Env {
			if e.Name == flags.EnvName("node-name") {
				node = append(node, e)
			}
		}
		if len(node) != 1 || node[0].Value != "" || node[0].ValueFrom == nil || node[0].ValueFrom.FieldRef == nil ||
			node[0].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
			t.Errorf("SIFTR_PROBE_NODE_NAME %+v, want one from the downward API's spec.nodeName", node)
		}
	})

	t.Run("resources", func(t *testing.T) {
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			lim, ok := c.Resources.Limits[res]
			if !ok || lim.IsZero() {
				t.Errorf("no %s limit: %+v", res, c.Resources.Limits)
			}
		}
	})

	t.Run("token", func(t *testing.T) {
		// The token is mounted in this variant's pod only; the account
		// keeps automountServiceAccountToken: false for every other pod.
		if a := spec.AutomountServiceAccountToken; a == nil || !*a {
			t.Errorf("pod automountServiceAccountToken = %v, want true: the probe lists and watches pods", a)
		}
		if a := r.sa.AutomountServiceAccountToken; a == nil || *a {
			t.Errorf("ServiceAccount automountServiceAccountToken = %v, want false", a)
		}
	})

	t.Run("rbac", func(t *testing.T) { checkFleetRBAC(t, r) })

	t.Run("nothing else", func(t *testing.T) {
		// Undo what the component is meant to change; the rest must be the
		// base's DaemonSet as it is.
		base := build(t, filesys.MakeFsOnDisk(), ".")
		got := r.ds.DeepCopy()
		gs, bs := &got.Spec.Template.Spec, &base.ds.Spec.Template.Spec
		gs.HostPID, gs.AutomountServiceAccountToken, gs.Volumes = bs.HostPID, bs.AutomountServiceAccountToken, bs.Volumes
		gc, bc := &gs.Containers[0], &bs.Containers[0]
		gc.Env, gc.VolumeMounts, gc.Resources = bc.Env, bc.VolumeMounts, bc.Resources
		gc.SecurityContext.Capabilities.Add = bc.SecurityContext.Capabilities.Add
		if !equality.Semantic.DeepEqual(got, base.ds) {
			g, _ := json.MarshalIndent(got, "", " ")
			b, _ := json.MarshalIndent(base.ds, "", " ")
			t.Errorf("the fleet DaemonSet differs from the base beyond its listed changes:\nfleet (reset): %s\nbase: %s", g, b)
		}
		// The fleet has no control socket (--control does not go with
		// --all-netns): its setting and its directory's volume go.
		if _, ok := r.cm.Data[flags.EnvName("control")]; ok {
			t.Errorf("ConfigMap sets %s: the probe refuses --control with --all-netns", flags.EnvName("control"))
		}
		gcm := r.cm.DeepCopy()
		delete(gcm.Data, flags.EnvName("all-netns"))
		delete(gcm.Data, flags.EnvName("state"))
		gcm.Data[flags.EnvName("control")] = base.cm.Data[flags.EnvName("control")]
		if !equality.Semantic.DeepEqual(gcm.Data, base.cm.Data) {
			t.Errorf("ConfigMap %v, want the base's %v, the two fleet settings and no control socket", r.cm.Data, base.cm.Data)
		}
		if !equality.Semantic.DeepEqual(r.sa, base.sa) || !equality.Semantic.DeepEqual(r.ns, base.ns) {
			t.Error("the fleet component changes the ServiceAccount or the Namespace")
		}
	})
}

// checkFleetRBAC: one ClusterRole that can get, list and watch pods and do
// nothing else, bound to the probe's service account alone.
func checkFleetRBAC(t *testing.T, r *rendered) {
	t.Helper()
	if len(r.cr) != 1 || len(r.crb) != 1 {
		t.Fatalf("RBAC %v, want one ClusterRole and one ClusterRoleBinding", r.all)
	}
	cr, crb := r.cr[0], r.crb[0]
	want := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}}
	if len(cr.Rules) != 1 {
		t.Fatalf("ClusterRole rules %+v, want exactly %+v", cr.Rules, want)
	}
	got := cr.Rules[0]
	verbs := slices.Clone(got.Verbs)
	slices.Sort(verbs)
	if !slices.Equal(got.APIGroups, want.APIGroups) || !slices.Equal(got.Resources, want.Resources) ||
		!slices.Equal(verbs, want.Verbs) || len(got.ResourceNames) != 0 || len(got.NonResourceURLs) != 0 {
		t.Errorf("ClusterRole rule %+v, want exactly %+v", got, want)
	}
	if cr.AggregationRule != nil {
		t.Errorf("ClusterRole aggregates other roles: %+v", cr.AggregationRule)
	}
	for k := range cr.Labels {
		// An aggregate-to label would fold the rule into admin, edit or view.
		if strings.HasPrefix(k, "rbac.authorization.k8s.io/aggregate-to-") {
			t.Errorf("ClusterRole label %s", k)
		}
	}
	if ref := crb.RoleRef; ref.APIGroup != rbacv1.GroupName || ref.Kind != "ClusterRole" || ref.Name != cr.Name {
		t.Errorf("ClusterRoleBinding roleRef %+v, want ClusterRole %s", ref, cr.Name)
	}
	wantSub := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: r.ds.Spec.Template.Spec.ServiceAccountName, Namespace: r.ds.Namespace}
	if len(crb.Subjects) != 1 || crb.Subjects[0] != wantSub {
		t.Errorf("ClusterRoleBinding subjects %+v, want exactly %+v", crb.Subjects, wantSub)
	}
	if wantSub.Name != r.sa.Name || wantSub.Namespace != r.sa.Namespace {
		t.Errorf("the binding's subject %+v is not the ServiceAccount %s/%s", wantSub, r.sa.Namespace, r.sa.Name)
	}
}

// TestFleetFilesDecodeStrictly decodes the component's RBAC manifests into
// their types, refusing unknown fields.
func TestFleetFilesDecodeStrictly(t *testing.T) {
	for file, obj := range map[string]any{
		"clusterrole.yaml":        &rbacv1.ClusterRole{},
		"clusterrolebinding.yaml": &rbacv1.ClusterRoleBinding{},
	} {
		data, err := os.ReadFile(filepath.Join("fleet", file))
		if err != nil {
			t.Fatal(err)
		}
		decodeStrict(t, data, obj)
	}
}
