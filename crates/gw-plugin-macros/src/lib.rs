//! `#[gw_core::plugin]`, the attribute every `impl gw_core::Plugin for T` block carries.
//!
//! It reads which hook methods the block defines and writes the plugin's phase set
//! (`Plugin::__phases`) from them, then applies `async_trait`. The phases a plugin runs in are
//! therefore the hooks it implements: a hook cannot be implemented and left undeclared (never
//! called), nor declared and left to its default.

use proc_macro::TokenStream;
use quote::quote;
use syn::{ImplItem, ItemImpl, parse_macro_input};

/// Hook methods and the `gw_core::Hooks` constant each one stands for.
const HOOKS: &[(&str, &str)] = &[
    ("pre_route", "PRE_ROUTE"),
    ("authenticate", "AUTHENTICATE"),
    ("access", "ACCESS"),
    ("request_body", "REQUEST_BODY"),
    ("request_filter", "REQUEST_FILTER"),
    ("upstream_request", "UPSTREAM_REQUEST"),
    ("upstream_response", "UPSTREAM_RESPONSE"),
    ("upstream_failed", "UPSTREAM_FAILED"),
    ("response_body", "RESPONSE_BODY"),
    ("response_filter", "RESPONSE_FILTER"),
    ("response", "RESPONSE"),
    ("log", "LOG"),
];

/// Derive the plugin's phases from the hooks its impl block defines, and apply `async_trait`.
#[proc_macro_attribute]
pub fn plugin(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let msg = "#[plugin] takes no arguments";
        return syn::Error::new(proc_macro2::Span::call_site(), msg).to_compile_error().into();
    }
    let mut imp = parse_macro_input!(item as ItemImpl);
    let mut bits = Vec::new();
    for item in &imp.items {
        let ImplItem::Fn(f) = item else { continue };
        let name = f.sig.ident.to_string();
        if name == "__phases" || name == "hooks" {
            let msg = "the phases of a plugin are derived from the hooks it implements: remove this method";
            return syn::Error::new_spanned(&f.sig.ident, msg).to_compile_error().into();
        }
        if let Some((_, c)) = HOOKS.iter().find(|(m, _)| *m == name) {
            let c = syn::Ident::new(c, f.sig.ident.span());
            bits.push(quote!(::gw_core::Hooks::#c));
        }
    }
    let set = if bits.is_empty() { quote!(::gw_core::Hooks::NONE) } else { quote!(#(#bits)|*) };
    imp.items.push(syn::parse_quote! {
        #[doc(hidden)]
        fn __phases(&self) -> ::gw_core::Hooks {
            #set
        }
    });
    quote!(#[::gw_core::async_trait] #imp).into()
}
