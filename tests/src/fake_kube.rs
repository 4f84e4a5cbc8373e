//! A stand-in Kubernetes API server for the Kubernetes provider's tests (no
//! real one can run on the test machines): plain HTTP/1.1 on 127.0.0.1,
//! speaking as much of the API as the provider and the manager's Lease use
//! — Jobs, Pods, Secrets and Leases in namespaces, created, read, listed by
//! label selector, replaced and deleted — with a little kubelet of its
//! own: a Job whose Secret exists gets a pod; if its image is one the test
//! said exists, the pod's container command runs as a local process with
//! the pod's environment (a `secretKeyRef` read from the Secret), and the
//! pod and Job follow that process (running and ready, then succeeded or
//! failed with its exit code); any other image leaves the pod waiting in
//! `ImagePullBackOff`. Deleting a Job kills its process and removes its
//! pods and the Secrets it owns, as the garbage collector does. Every
//! request is kept ([`FakeKube::requests`]). Dropping it stops the server,
//! the kubelet and every process it started.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Resource kinds by their path segment: (apiVersion, kind).
const KINDS: [(&str, &str, &str); 4] = [
    ("jobs", "batch/v1", "Job"),
    ("pods", "v1", "Pod"),
    ("secrets", "v1", "Secret"),
    ("leases", "coordination.k8s.io/v1", "Lease"),
];

#[derive(Default)]
struct World {
    /// (resource, namespace, name) → object.
    objects: BTreeMap<(String, String, String), Value>,
    /// Job uid → its process.
    processes: BTreeMap<String, Child>,
    images: BTreeSet<String>,
    requests: Vec<String>,
    counter: u64,
    log_dir: PathBuf,
}

struct Shared {
    world: Mutex<World>,
    stopping: AtomicBool,
}

pub struct FakeKube {
    pub addr: String,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeKube {
    /// Starts the server and its kubelet; pods' processes write their
    /// output to files in `log_dir`.
    pub fn start(log_dir: &Path) -> FakeKube {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fake API server");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared {
            world: Mutex::new(World {
                log_dir: log_dir.to_path_buf(),
                ..World::default()
            }),
            stopping: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(std::thread::spawn(move || accept(listener, s)));
        let s = shared.clone();
        threads.push(std::thread::spawn(move || kubelet(s)));
        FakeKube {
            addr,
            shared,
            threads,
        }
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.shared.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pods of this image start (any other: `ImagePullBackOff`).
    pub fn add_image(&self, image: &str) {
        self.world().images.insert(image.to_string());
    }

    /// A kubeconfig pointing at this server, namespace `namespace`.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             users:\n- name: fake\n  user:\n    token: fake-token\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\n\
             current-context: fake\n",
            self.addr
        )
    }

    /// Every request so far: `METHOD PATH`.
    pub fn requests(&self) -> Vec<String> {
        self.world().requests.clone()
    }

    /// The objects of `resource` (`jobs`, `pods`, `secrets`, `leases`).
    pub fn objects(&self, resource: &str) -> Vec<Value> {
        self.world()
            .objects
            .iter()
            .filter(|((r, _, _), _)| r == resource)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Stores `object` as if someone else had (a Lease another manager
    /// holds).
    pub fn put(&self, resource: &str, namespace: &str, object: Value) {
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        self.world()
            .objects
            .insert((resource.into(), namespace.into(), name), object);
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let mut world = self.world();
        for (_, mut child) in std::mem::take(&mut world.processes) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = Vec::new();
    while !shared.stopping.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let s = shared.clone();
                connections.push(std::thread::spawn(move || {
                    let _ = serve(stream, &s);
                }));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => break,
        }
    }
    for c in connections {
        let _ = c.join();
    }
}

/// One keep-alive connection's requests.
fn serve(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        loop {
            if shared.stopping.load(Ordering::SeqCst) {
                return Ok(());
            }
            match reader.read_line(&mut line) {
                Ok(0) => return Ok(()),
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut length = 0;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (status, answer) = {
            let mut world = shared.world.lock().unwrap_or_else(|p| p.into_inner());
            world.requests.push(format!("{method} {target}"));
            handle(&mut world, &method, &target, body)
        };
        let text = answer.to_string();
        write!(
            writer,
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )?;
        writer.flush()?;
    }
}

fn status(code: u16, reason: &str, message: String) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

/// Answers one request.
fn handle(world: &mut World, method: &str, target: &str, body: Value) -> (u16, Value) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/namespaces/NS/RES[/NAME] or /apis/GROUP/VERSION/namespaces/NS/RES[/NAME]
    let rest = match segments.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => return status(404, "NotFound", format!("no such path {path}")),
    };
    let (ns, resource, name) = match rest {
        ["namespaces", ns, res] => (*ns, *res, None),
        ["namespaces", ns, res, name] => (*ns, *res, Some(*name)),
        _ => return status(404, "NotFound", format!("no such path {path}")),
    };
    let Some(&(_, api_version, kind)) = KINDS.iter().find(|(r, _, _)| *r == resource) else {
        return status(404, "NotFound", format!("no resource {resource}"));
    };
    let key = |name: &str| (resource.to_string(), ns.to_string(), name.to_string());
    match (method, name) {
        ("GET", None) => {
            let selector = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("labelSelector="))
                .map(percent_decode)
                .unwrap_or_default();
            let items: Vec<Value> = world
                .objects
                .iter()
                .filter(|((r, n, _), v)| r == resource && n == ns && selects(&selector, v))
                .map(|(_, v)| v.clone())
                .collect();
            world.counter += 1;
            (
                200,
                json!({"apiVersion": api_version, "kind": format!("{kind}List"),
                       "metadata": {"resourceVersion": world.counter.to_string()}, "items": items}),
            )
        }
        ("GET", Some(name)) => match world.objects.get(&key(name)) {
            Some(v) => (200, v.clone()),
            None => status(404, "NotFound", format!("{resource} \"{name}\" not found")),
        },
        ("POST", None) => {
            let mut object = body;
            let Some(name) = object["metadata"]["name"].as_str().map(String::from) else {
                return status(422, "Invalid", "metadata.name: Required value".into());
            };
            if world.objects.contains_key(&key(&name)) {
                return status(
                    409,
                    "AlreadyExists",
                    format!("{resource} \"{name}\" already exists"),
                );
            }
            world.counter += 1;
            let meta = &mut object["metadata"];
            meta["uid"] = json!(format!("uid-{}", world.counter));
            meta["namespace"] = json!(ns);
            meta["resourceVersion"] = json!(world.counter.to_string());
            meta["creationTimestamp"] = json!(now_rfc3339());
            object["apiVersion"] = json!(api_version);
            object["kind"] = json!(kind);
            if resource == "secrets" {
                // The API server keeps stringData as data.
                if let Some(Value::Object(data)) = object.get("stringData").cloned() {
                    object["data"] = json!(data
                        .iter()
                        .map(|(k, v)| (k.clone(), json!(base64(v.as_str().unwrap_or("")))))
                        .collect::<serde_json::Map<_, _>>());
                    object.as_object_mut().unwrap().remove("stringData");
                }
            }
            world.objects.insert(key(&name), object.clone());
            (201, object)
        }
        ("PUT", Some(name)) => {
            let Some(current) = world.objects.get(&key(name)) else {
                return status(404, "NotFound", format!("{resource} \"{name}\" not found"));
            };
            let given = body["metadata"]["resourceVersion"].clone();
            if given != current["metadata"]["resourceVersion"] {
                return status(409, "Conflict", format!(
                    "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified"
                ));
            }
            let mut object = body;
            world.counter += 1;
            object["metadata"]["resourceVersion"] = json!(world.counter.to_string());
            object["metadata"]["uid"] = current["metadata"]["uid"].clone();
            world.objects.insert(key(name), object.clone());
            (200, object)
        }
        ("DELETE", Some(name)) => {
            let Some(object) = world.objects.remove(&key(name)) else {
                return status(404, "NotFound", format!("{resource} \"{name}\" not found"));
            };
            if resource == "jobs" {
                let uid = object["metadata"]["uid"].as_str().unwrap_or("").to_string();
                if let Some(mut child) = world.processes.remove(&uid) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                // The garbage collector: its pods and what it owns.
                world.objects.retain(|(r, _, _), v| {
                    let owned = v["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|r| r["uid"] == uid.as_str()));
                    let its_pod = r == "pods" && v["metadata"]["labels"]["job-uid"] == uid.as_str();
                    !owned && !its_pod
                });
            }
            (200, object)
        }
        _ => status(405, "MethodNotAllowed", format!("{method} {path}")),
    }
}

/// Whether `object`'s labels satisfy an equality selector (`a=b,c=d`).
fn selects(selector: &str, object: &Value) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        object["metadata"]["labels"][k].as_str() == Some(v.trim_start_matches('='))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn base64(s: &str) -> String {
    data_encoding::BASE64.encode(s.as_bytes())
}

fn now_rfc3339() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if out.is_empty() {
        "2026-01-01T00:00:00Z".into()
    } else {
        out
    }
}

/// The kubelet: every 50 ms, gives each Job whose Secret exists a pod,
/// starts it (or leaves it waiting for its image), and follows the
/// processes it started.
fn kubelet(shared: Arc<Shared>) {
    while !shared.stopping.load(Ordering::SeqCst) {
        {
            let mut world = shared.world.lock().unwrap_or_else(|p| p.into_inner());
            step(&mut world);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn step(world: &mut World) {
    let jobs: Vec<(String, String, Value)> = world
        .objects
        .iter()
        .filter(|((r, _, _), _)| r == "jobs")
        .map(|((_, ns, name), v)| (ns.clone(), name.clone(), v.clone()))
        .collect();
    for (ns, name, job) in jobs {
        let uid = job["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let pod_key = ("pods".to_string(), ns.clone(), name.clone());
        if !world.objects.contains_key(&pod_key) {
            let Some(secret) = world
                .objects
                .get(&("secrets".to_string(), ns.clone(), name.clone()))
                .cloned()
            else {
                continue;
            };
            start_pod(world, &ns, &name, &uid, &job, &secret);
            continue;
        }
        // Follow its process.
        let Some(child) = world.processes.get_mut(&uid) else {
            continue;
        };
        let Ok(Some(exit)) = child.try_wait() else {
            continue;
        };
        world.processes.remove(&uid);
        let code = exit.code().unwrap_or(137);
        let ok = code == 0;
        if let Some(pod) = world.objects.get_mut(&pod_key) {
            pod["status"] = json!({
                "phase": if ok { "Succeeded" } else { "Failed" },
                "containerStatuses": [{"name": "worker", "image": "", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"terminated": {"exitCode": code,
                        "reason": if ok { "Completed" } else { "Error" }}}}],
            });
        }
        if let Some(job) = world.objects.get_mut(&("jobs".to_string(), ns, name)) {
            job["status"] = if ok {
                json!({"succeeded": 1, "ready": 0, "conditions": [
                    {"type": "Complete", "status": "True"}]})
            } else {
                json!({"failed": 1, "ready": 0, "conditions": [
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                     "message": "Job has reached the specified backoff limit"}]})
            };
        }
    }
}

fn start_pod(world: &mut World, ns: &str, name: &str, uid: &str, job: &Value, secret: &Value) {
    let template = &job["spec"]["template"];
    let container = &template["spec"]["containers"][0];
    let image = container["image"].as_str().unwrap_or("").to_string();
    let mut labels = template["metadata"]["labels"].clone();
    labels["job-uid"] = json!(uid);
    labels["job-name"] = json!(name);
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels,
                     "uid": format!("pod-{uid}"), "creationTimestamp": now_rfc3339()},
        "spec": template["spec"].clone(),
    });
    let mut job_status = json!({"active": 1, "ready": 0});
    if world.images.contains(&image) {
        let command: Vec<String> = container["command"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(|a| a.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..]).env_clear();
        cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
        cmd.env("HOME", &world.log_dir);
        for e in container["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap_or("");
            let value = match e["valueFrom"]["secretKeyRef"]["key"].as_str() {
                Some(key) => {
                    let encoded = secret["data"][key].as_str().unwrap_or("");
                    let bytes = data_encoding::BASE64
                        .decode(encoded.as_bytes())
                        .unwrap_or_default();
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                None => e["value"].as_str().unwrap_or("").to_string(),
            };
            cmd.env(name, value);
        }
        let log = world.log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("a pod's log file");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        match cmd.spawn() {
            Ok(child) => {
                world.processes.insert(uid.to_string(), child);
                pod["status"] = json!({"phase": "Running", "containerStatuses": [{
                    "name": "worker", "image": image, "imageID": "", "ready": true,
                    "restartCount": 0, "state": {"running": {}}}]});
                job_status = json!({"active": 1, "ready": 1});
            }
            Err(e) => {
                pod["status"] = json!({"phase": "Failed", "containerStatuses": [{
                    "name": "worker", "image": image, "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"terminated": {"exitCode": 127,
                        "reason": "StartError", "message": e.to_string()}}}]});
                job_status = json!({"failed": 1, "conditions": [{"type": "Failed",
                    "status": "True", "reason": "BackoffLimitExceeded"}]});
            }
        }
    } else {
        pod["status"] = json!({"phase": "Pending", "containerStatuses": [{
            "name": "worker", "image": image, "imageID": "", "ready": false,
            "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff",
                "message": format!("Back-off pulling image \"{image}\"")}}}]});
    }
    world
        .objects
        .insert(("pods".into(), ns.into(), name.into()), pod);
    if let Some(job) =
        world
            .objects
            .get_mut(&("jobs".to_string(), ns.to_string(), name.to_string()))
    {
        job["status"] = job_status;
    }
}
