//! One builder for the store's conditional writes: the update expression
//! (`SET`, `ADD`, `REMOVE`, `DELETE`), the condition, and the attribute names and
//! values they use.
//!
//! Every attribute name goes through a `#` placeholder (so reserved words
//! such as `status` need no care) and every value gets a `:` placeholder of
//! its own, numbered by the builder: two clauses can never collide on a
//! placeholder, however they are combined.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::builders::{DeleteBuilder, PutBuilder, UpdateBuilder};
use aws_sdk_dynamodb::types::AttributeValue;

/// An update expression and condition with their names and values.
#[derive(Debug, Clone, Default)]
pub(crate) struct Write {
    set: Vec<String>,
    add: Vec<String>,
    remove: Vec<String>,
    delete: Vec<String>,
    conditions: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Write {
    pub(crate) fn new() -> Write {
        Write::default()
    }

    /// The placeholder of an attribute name (the same one each time).
    pub(crate) fn name(&mut self, attribute: &str) -> String {
        if let Some((p, _)) = self.names.iter().find(|(_, a)| a.as_str() == attribute) {
            return p.clone();
        }
        let p = format!("#n{}", self.names.len());
        self.names.insert(p.clone(), attribute.to_string());
        p
    }

    /// A new placeholder holding `value`.
    pub(crate) fn value(&mut self, value: AttributeValue) -> String {
        let p = format!(":v{}", self.values.len());
        self.values.insert(p.clone(), value);
        p
    }

    /// `SET attribute = value`.
    pub(crate) fn set(mut self, attribute: &str, value: AttributeValue) -> Write {
        let (a, v) = (self.name(attribute), self.value(value));
        self.set.push(format!("{a} = {v}"));
        self
    }

    /// `SET attribute = attribute + value` (the attribute must exist).
    pub(crate) fn increment(mut self, attribute: &str, by: AttributeValue) -> Write {
        let (a, v) = (self.name(attribute), self.value(by));
        self.set.push(format!("{a} = {a} + {v}"));
        self
    }

    /// `ADD attribute value` (a missing number counts from 0).
    pub(crate) fn add(mut self, attribute: &str, value: AttributeValue) -> Write {
        let (a, v) = (self.name(attribute), self.value(value));
        self.add.push(format!("{a} {v}"));
        self
    }

    /// `REMOVE attribute`.
    pub(crate) fn remove(mut self, attribute: &str) -> Write {
        let a = self.name(attribute);
        self.remove.push(a);
        self
    }

    /// `DELETE attribute value`: take the elements of the set `value` out
    /// of the set attribute (nothing happens for elements not in it).
    pub(crate) fn delete_from(mut self, attribute: &str, value: AttributeValue) -> Write {
        let (a, v) = (self.name(attribute), self.value(value));
        self.delete.push(format!("{a} {v}"));
        self
    }

    /// A condition on the item, ANDed with the others: `make` gets the
    /// builder to name attributes and values with
    /// ([`Write::name`], [`Write::value`]) and answers the clause.
    pub(crate) fn when(mut self, make: impl FnOnce(&mut Write) -> String) -> Write {
        let clause = make(&mut self);
        self.conditions.push(clause);
        self
    }

    /// Condition `attribute = value`.
    pub(crate) fn when_eq(self, attribute: &str, value: AttributeValue) -> Write {
        self.when(|w| format!("{} = {}", w.name(attribute), w.value(value)))
    }

    /// Condition: no item yet (`attribute_not_exists(pk)`).
    pub(crate) fn when_new(self) -> Write {
        self.when(|w| format!("attribute_not_exists({})", w.name("pk")))
    }

    /// The update expression: `SET …`, `ADD …`, `REMOVE …`, `DELETE …`,
    /// the clauses present, in that order.
    pub(crate) fn expression(&self) -> String {
        [("SET", &self.set), ("ADD", &self.add), ("REMOVE", &self.remove), ("DELETE", &self.delete)]
            .iter()
            .filter(|(_, c)| !c.is_empty())
            .map(|(k, c)| format!("{k} {}", c.join(", ")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The condition (`None`: unconditional): every clause, each in
    /// parentheses when there are several.
    pub(crate) fn condition(&self) -> Option<String> {
        match self.conditions.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            many => Some(many.iter().map(|c| format!("({c})")).collect::<Vec<_>>().join(" AND ")),
        }
    }

    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }

    /// An `UpdateItem` request with this expression, condition, names and values.
    pub(crate) fn update_item(&self, req: UpdateItemFluentBuilder) -> UpdateItemFluentBuilder {
        req.update_expression(self.expression())
            .set_condition_expression(self.condition())
            .set_expression_attribute_names(self.names())
            .set_expression_attribute_values(self.values())
    }

    /// The same, for an update in a transaction.
    pub(crate) fn update(&self, b: UpdateBuilder) -> UpdateBuilder {
        b.update_expression(self.expression())
            .set_condition_expression(self.condition())
            .set_expression_attribute_names(self.names())
            .set_expression_attribute_values(self.values())
    }

    /// A conditional `PutItem` (only the condition is used).
    pub(crate) fn put_item(&self, req: PutItemFluentBuilder) -> PutItemFluentBuilder {
        req.set_condition_expression(self.condition()).set_expression_attribute_names(self.names()).set_expression_attribute_values(self.values())
    }

    /// A conditional put in a transaction (only the condition is used).
    pub(crate) fn put(&self, b: PutBuilder) -> PutBuilder {
        b.set_condition_expression(self.condition()).set_expression_attribute_names(self.names()).set_expression_attribute_values(self.values())
    }

    /// A conditional delete in a transaction (only the condition is used).
    pub(crate) fn delete(&self, b: DeleteBuilder) -> DeleteBuilder {
        b.set_condition_expression(self.condition()).set_expression_attribute_names(self.names()).set_expression_attribute_values(self.values())
    }
}

#[cfg(test)]
mod tests {
    use super::Write;
    use aws_sdk_dynamodb::types::AttributeValue;

    fn n(v: u64) -> AttributeValue {
        AttributeValue::N(v.to_string())
    }

    #[test]
    fn builds_clauses_in_order_with_their_names_and_values() {
        let w = Write::new()
            .remove("pend")
            .set("version", n(2))
            .add("seen", n(1))
            .increment("count", n(1))
            .set("status", AttributeValue::S("running".into()))
            .when_eq("version", n(1));
        assert_eq!(w.expression(), "SET #n1 = :v0, #n3 = #n3 + :v2, #n4 = :v3 ADD #n2 :v1 REMOVE #n0");
        assert_eq!(w.condition().as_deref(), Some("#n1 = :v4"));
        let names = w.names().unwrap();
        assert_eq!(names.len(), 5);
        assert_eq!(names["#n0"], "pend");
        assert_eq!(names["#n1"], "version");
        assert_eq!(names["#n4"], "status");
        let values = w.values().unwrap();
        assert_eq!(values[":v0"], n(2));
        assert_eq!(values[":v4"], n(1));
        assert_eq!(values[":v3"], AttributeValue::S("running".into()));
    }

    #[test]
    fn a_set_element_is_deleted_in_a_clause_of_its_own() {
        let ids = AttributeValue::Ss(vec!["s1".into()]);
        let w = Write::new().add("sagas", ids.clone()).delete_from("sagas", ids.clone()).set("a", n(1));
        assert_eq!(w.expression(), "SET #n1 = :v2 ADD #n0 :v0 DELETE #n0 :v1");
        assert_eq!(w.values().unwrap()[":v1"], ids);
    }

    #[test]
    fn several_conditions_are_each_parenthesised() {
        let w =
            Write::new().set("a", n(1)).when_new().when(|w| format!("{} = {} OR {} < {}", w.name("tok"), w.value(n(7)), w.name("lease"), w.value(n(9))));
        assert_eq!(w.condition().as_deref(), Some("(attribute_not_exists(#n1)) AND (#n2 = :v1 OR #n3 < :v2)"));
        assert_eq!(Write::new().set("a", n(1)).condition(), None);
    }

    /// Every placeholder in the texts is defined exactly once, every defined
    /// one is used (DynamoDB refuses unused ones), and no two values share a
    /// placeholder, even for equal values and a repeated attribute.
    #[test]
    fn placeholders_never_collide() {
        let mut w = Write::new();
        for i in 0..12u64 {
            w = match i % 4 {
                0 => w.set(&format!("a{i}"), n(1)),
                1 => w.add("same", n(1)),
                2 => w.remove(&format!("r{i}")),
                _ => w.when_eq("same", n(1)),
            };
        }
        let text = format!("{} {}", w.expression(), w.condition().unwrap());
        let values = w.values().unwrap();
        let names = w.names().unwrap();
        assert_eq!(values.len(), 9, "one placeholder per value given");
        let used: Vec<&str> = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == ':' || c == '#')).filter(|t| t.starts_with([':', '#'])).collect();
        for p in values.keys().chain(names.keys()) {
            assert!(used.contains(&p.as_str()), "{p} defined but unused in {text}");
        }
        for p in &used {
            assert!(values.contains_key(*p) || names.contains_key(*p), "{p} used but not defined in {text}");
        }
        let value_uses = used.iter().filter(|p| p.starts_with(':')).count();
        assert_eq!(value_uses, values.len(), "each value placeholder used once: {text}");
        assert_eq!(names.values().filter(|a| a.as_str() == "same").count(), 1, "a repeated attribute keeps one name");
    }
}
