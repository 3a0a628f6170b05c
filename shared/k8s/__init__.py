"""Sans-IO pieces of the Kubernetes Cluster Tunnel, enforced on the Jumpoint.

Nothing in this package does I/O:

  - L{requests}: classifies a Kubernetes API request (verb, group, version,
    namespace, resource, subresource, name) the way the apiserver's
    C{RequestInfoFactory} does, and refuses hostile paths with
    L{requests.K8sRequestError};
  - L{http}: an incremental HTTP/1.1 request-head and response-head parser
    that keeps header order and repeats, header rewriting, head encoding and a
    chunked-body decoder, raising L{http.HttpError} with a status and reason;
  - L{policy}: the per-jump-item L{policy.KubePolicy}, the check of one
    request against it and the Kubernetes C{Status} responses (403, 401)
    that make kubectl print C{Error from server (Forbidden): ...}.

See /work/shared/reference/kubernetes.md for the research behind the rules.
"""
