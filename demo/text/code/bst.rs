//! An unbalanced binary search tree with in-order iteration.

#[derive(Debug)]
struct Node<T> {
    value: T,
    left: Option<Box<Node<T>>>,
    right: Option<Box<Node<T>>>,
}

#[derive(Debug, Default)]
pub struct Tree<T> {
    root: Option<Box<Node<T>>>,
    len: usize,
}

impl<T: Ord> Tree<T> {
    pub fn new() -> Self {
        Tree { root: None, len: 0 }
    }

    /// Inserts `value`, returning false when it was already present.
    pub fn insert(&mut self, value: T) -> bool {
        let mut slot = &mut self.root;
        while let Some(node) = slot {
            if value == node.value {
                return false;
            }
            slot = if value < node.value { &mut node.left } else { &mut node.right };
        }
        *slot = Some(Box::new(Node { value, left: None, right: None }));
        self.len += 1;
        true
    }

    pub fn contains(&self, value: &T) -> bool {
        let mut current = &self.root;
        while let Some(node) = current {
            if *value == node.value {
                return true;
            }
            current = if *value < node.value { &node.left } else { &node.right };
        }
        false
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn iter(&self) -> InOrder<'_, T> {
        let mut it = InOrder { stack: Vec::new() };
        it.push_left(&self.root);
        it
    }
}

pub struct InOrder<'a, T> {
    stack: Vec<&'a Node<T>>,
}

impl<'a, T> InOrder<'a, T> {
    fn push_left(&mut self, mut node: &'a Option<Box<Node<T>>>) {
        while let Some(n) = node {
            self.stack.push(n);
            node = &n.left;
        }
    }
}

impl<'a, T> Iterator for InOrder<'a, T> {
    type Item = &'a T;

    fn next(&mut self) -> Option<&'a T> {
        let node = self.stack.pop()?;
        self.push_left(&node.right);
        Some(&node.value)
    }
}

fn main() {
    let mut tree = Tree::new();
    for word in ["pear", "apple", "fig", "plum", "apple", "kiwi"] {
        tree.insert(word);
    }
    let sorted: Vec<_> = tree.iter().copied().collect();
    println!("{} words: {:?}", tree.len(), sorted);
    assert!(tree.contains(&"fig") && !tree.contains(&"lime"));
}
