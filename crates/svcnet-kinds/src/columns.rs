//! Printer columns: the `TableColumnDefinition`s `kubectl get` shows. Each kind's columns are in its
//! definition; this module has the column type and what every printer shares. The descriptions are the
//! `SwaggerDoc()` strings kube puts in `description` (from k8s.io/api and k8s.io/apimachinery v0.33
//! `types_swagger_doc_generated.go`, including the types kube quotes even where newer API versions
//! exist, e.g. extensions/v1beta1 for ReplicaSet and Deployment).

/// The description of `metadata.name`.
pub const DOC_NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
/// The description of `metadata.creationTimestamp`.
pub const DOC_CREATION_TIMESTAMP: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
/// The description of The container names of a workload's template.
pub const DOC_CONTAINERS: &str = "Names of each container in the template.";
/// The description of The images of a workload's template.
pub const DOC_IMAGES: &str = "Images referenced by each container in the template.";

/// One `TableColumnDefinition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: &'static str,
    /// OpenAPI type (`string`, `integer`, `date`).
    pub ty: &'static str,
    /// OpenAPI format (`name` marks the column that identifies the row).
    pub format: &'static str,
    /// Description (kube's `SwaggerDoc()` text).
    pub description: &'static str,
    /// 0 shown by default, 1 only with `-o wide`.
    pub priority: i32,
}

/// A column shown by default.
pub const fn col(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 0,
    }
}

/// A column kubectl shows only with `-o wide`.
pub const fn wide(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 1,
    }
}

/// The `Name` column every printer starts with; `format: name` tells clients it identifies the row.
pub const NAME: Column = Column {
    name: "Name",
    ty: "string",
    format: "name",
    description: DOC_NAME,
    priority: 0,
};
/// The `Age` column.
pub const AGE: Column = col("Age", "string", DOC_CREATION_TIMESTAMP);

/// kube's default table convertor (`rest.NewDefaultTableConvertor`), used for kinds without a printer.
pub const DEFAULT_COLUMNS: &[Column] = &[NAME, col("Created At", "date", DOC_CREATION_TIMESTAMP)];
