//! A tokenizer for arithmetic expressions and a tiny recursive-descent evaluator.

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Plus,
    Minus,
    Star,
    Slash,
    LParen,
    RParen,
}

fn tokenize(input: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => {}
            '+' => tokens.push(Token::Plus),
            '-' => tokens.push(Token::Minus),
            '*' => tokens.push(Token::Star),
            '/' => tokens.push(Token::Slash),
            '(' => tokens.push(Token::LParen),
            ')' => tokens.push(Token::RParen),
            d if d.is_ascii_digit() || d == '.' => {
                let start = i;
                while i + 1 < chars.len() && (chars[i + 1].is_ascii_digit() || chars[i + 1] == '.') {
                    i += 1;
                }
                let text: String = chars[start..=i].iter().collect();
                let value = text.parse().map_err(|_| format!("bad number {text:?}"))?;
                tokens.push(Token::Number(value));
            }
            other => return Err(format!("unexpected character {other:?} at {i}")),
        }
        i += 1;
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    // expr := term (('+' | '-') term)*
    fn expr(&mut self) -> Result<f64, String> {
        let mut value = self.term()?;
        while let Some(op) = self.peek().cloned() {
            match op {
                Token::Plus => { self.next(); value += self.term()?; }
                Token::Minus => { self.next(); value -= self.term()?; }
                _ => break,
            }
        }
        Ok(value)
    }

    // term := factor (('*' | '/') factor)*
    fn term(&mut self) -> Result<f64, String> {
        let mut value = self.factor()?;
        while let Some(op) = self.peek().cloned() {
            match op {
                Token::Star => { self.next(); value *= self.factor()?; }
                Token::Slash => { self.next(); value /= self.factor()?; }
                _ => break,
            }
        }
        Ok(value)
    }

    // factor := number | '-' factor | '(' expr ')'
    fn factor(&mut self) -> Result<f64, String> {
        match self.next() {
            Some(Token::Number(n)) => Ok(n),
            Some(Token::Minus) => Ok(-self.factor()?),
            Some(Token::LParen) => {
                let value = self.expr()?;
                match self.next() {
                    Some(Token::RParen) => Ok(value),
                    _ => Err("expected ')'".to_string()),
                }
            }
            other => Err(format!("unexpected token {other:?}")),
        }
    }
}

fn evaluate(input: &str) -> Result<f64, String> {
    let mut parser = Parser { tokens: tokenize(input)?, pos: 0 };
    let value = parser.expr()?;
    if parser.pos != parser.tokens.len() {
        return Err("trailing input".to_string());
    }
    Ok(value)
}

fn main() {
    for line in ["1 + 2 * 3", "(1 + 2) * 3", "-4 / (2 - 0.5)", "2 * (3"] {
        match evaluate(line) {
            Ok(v) => println!("{line} = {v}"),
            Err(e) => println!("{line}: error: {e}"),
        }
    }
}
