//! Pod manifests to projection plans.
